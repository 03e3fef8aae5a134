#!/usr/bin/env bash
# Install every Debian 12 package spool needs to build, test and benchmark.
# Run as root (or with sudo available). Idempotent: skips apt when all are present.
#   --with-peers   also install the benchmark peers (libopenblas-dev, libtorch-dev)
#   --with-torch   also install python3-torch (only to regenerate tests/fixtures)
#   --with-fuzz    also install clang and its fuzzer/sanitizer runtimes (scripts/fuzz.sh, CI)
set -euo pipefail

# pkg-config and cmake: the consumer test (scripts/consumers.sh) and spool's CMake package;
# doxygen: the API reference (ninja -C build docs, the test doxygen); libopenmpi-dev and
# openmpi-bin (mpirun): dist/, data-parallel training, and its test test_dist
pkgs=(g++ meson ninja-build pkg-config cmake doxygen libxtensor-dev libxsimd-dev doctest-dev nlohmann-json3-dev
      libgomp1 python3 libcli11-dev gnuplot-nox libopenmpi-dev openmpi-bin)
for arg in "$@"; do
  case "$arg" in
    --with-peers) pkgs+=(libopenblas-dev libtorch-dev) ;;
    --with-torch) pkgs+=(python3-torch python3-numpy) ;;
    --with-fuzz) pkgs+=(clang libclang-rt-14-dev libomp-dev) ;;
    *) echo "install-deps.sh: unknown option '$arg'" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps.sh: all ${#pkgs[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps.sh: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
