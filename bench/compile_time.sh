#!/usr/bin/env bash
# Compile time of a user program that includes spool.hpp (-O2, compile only), median of
# N runs, as a JSON line. LibTorch's hello-world takes ~27 s on these machines.
# Usage: bench/compile_time.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-7}"
out=$(mktemp -d)
times=()
for _ in $(seq "$runs"); do
  t0=$(date +%s.%N)
  g++ -std=c++20 -O2 -I. -c bench/compile_time/hello.cpp -o "$out/hello.o"
  t1=$(date +%s.%N)
  times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')")
done
rm -rf "$out"
printf '%s\n' "${times[@]}" | sort -g | awk -v n="$runs" '
  { v[NR] = $1 }
  END { med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2;
        printf "{\"bench\":\"compile_time\",\"program\":\"bench/compile_time/hello.cpp\",\"seconds\":%.3f,\"seconds_min\":%.3f,\"seconds_max\":%.3f,\"runs\":%d}\n", med, v[1], v[n], n }'
