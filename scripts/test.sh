#!/usr/bin/env bash
# The test command (README quick start, and CI): install what is missing, configure a
# release build in build/, build everything, run every test suite through meson.
# Usage: scripts/test.sh [build-dir] [extra meson setup args...]
set -euo pipefail
cd "$(dirname "$0")/.."
builddir="${1:-build}"
shift || true
scripts/install-deps.sh
if [ ! -f "$builddir/build.ninja" ]; then
  meson setup "$builddir" --buildtype=release "$@"
fi
ninja -C "$builddir"
meson test -C "$builddir" --print-errorlogs --num-processes 1
