#!/usr/bin/env bash
# The main job (README quick start, command 1): install what is missing, configure a
# release build in build/, build only the flagship trainer, and train a Transformer on the
# date-normalisation task to >= 99% held-out exact match. Arguments go to the trainer
# (e.g. scripts/main.sh --steps 500; scripts/main.sh --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build examples/train_seq2seq
exec build/examples/train_seq2seq "$@"
