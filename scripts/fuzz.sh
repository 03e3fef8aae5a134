#!/usr/bin/env bash
# Build the libFuzzer target for the safetensors reader (tests/fuzz/fuzz_safetensors.cpp)
# with clang (-fsanitize=fuzzer,address,undefined) and fuzz it for a bounded time from
# the committed seed corpus. Exits non-zero on any finding (crash, sanitizer report,
# leak, an exception other than IoError, a timeout); the reproducer is left in the work
# directory. Needs clang and libclang-rt-14-dev (scripts/install-deps.sh --with-fuzz).
# Usage: scripts/fuzz.sh [seconds=60] [work-dir=build-fuzz]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
work="${2:-build-fuzz}"
CXX="${FUZZ_CXX:-clang++}"
mkdir -p "$work/obj" "$work/corpus"

# The reader and what it links: tensor storage and shapes, and the Tensor handle (which
# pulls in the tape, random numbers, casts and the finite check of anomaly mode).
srcs=(io/safetensors.cpp tests/fuzz/fuzz_safetensors.cpp tensor/shape.cpp tensor/value.cpp tensor/layout.cpp
      tensor/random.cpp tensor/elementwise.cpp tensor/threads.cpp tensor/profiler.cpp autograd/tensor.cpp autograd/tape.cpp)
# the kernels chosen at run time (random.cpp's Philox blocks go through their table): the
# dispatcher and this machine's one compilation of each per-instruction-set file
srcs+=(tensor/gemm.cpp tensor/gemm_arch.cpp tensor/kernels_arch.cpp)
# tensor/reduce.cpp captures structured bindings in lambdas, which clang 14 cannot compile:
# it is built with g++, uninstrumented (only all_finite is used, by anomaly mode, off here)
gcc_srcs=(tensor/reduce.cpp)
flags=(-std=c++20 -O1 -g -I. -DXTENSOR_USE_XSIMD -march=native -fno-omit-frame-pointer -DSPOOL_ARCH_NATIVE
       -DSPOOL_ARCH=native)
obj_of() { echo "$work/obj/$(echo "$1" | tr / _).o"; }
# compile src with the given compiler and flags when its object is older than it or than any header
build() {
  local cxx="$1" src="$2"; shift 2
  local obj; obj=$(obj_of "$src")
  if [ ! -f "$obj" ] || [ -n "$(find "$src" tensor autograd io -newer "$obj" -name '*.[ch]pp' | head -1)" ]; then
    "$cxx" "${flags[@]}" "$@" -c "$src" -o "$obj"
  fi
}
echo "fuzz: building $work/fuzz_safetensors with $CXX"
pids=()
for s in "${srcs[@]}"; do
  build "$CXX" "$s" -pthread -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all & pids+=($!)
done
for s in "${gcc_srcs[@]}"; do build g++ "$s" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done
objs=()
for s in "${srcs[@]}" "${gcc_srcs[@]}"; do objs+=("$(obj_of "$s")"); done
"$CXX" -pthread -fsanitize=fuzzer,address,undefined "${objs[@]}" -o "$work/fuzz_safetensors"

echo "fuzz: $seconds s from tests/fuzz/corpus (new inputs go to $work/corpus)"
log="$work/fuzz.log"
status=0
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
  "$work/fuzz_safetensors" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
  -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" tests/fuzz/corpus >"$log" 2>&1 || status=$?
runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
if [ "$status" -ne 0 ]; then
  tail -60 "$log"
  echo "fuzz: FINDING after $runs executions (exit $status); reproducer: $(ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null | head -1)"
  exit 1
fi
echo "fuzz: $runs executions in $seconds s, no findings"
