#!/usr/bin/env bash
# The main job (README quick start, command 1): install what is missing, configure a
# release build in build/, build, and run the flagship program — for now tutorial 01.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build
build/examples/01_autograd
