#!/usr/bin/env python3
"""GEMM of a portable build (-Dnative=false, kernel chosen at run time) against a native build.

Runs bench/gemm --no-peer from both build directories in alternating rounds (native first in odd
rounds, portable first in even ones, so the two share the machine's drift) and prints, per shape
and thread count, one JSON line with each side's median GFLOP/s over all rounds, the kernels they
ran and portable / native (issue 11's target: >= 0.95).

Usage: bench/portable_gemm.py [--native build] [--portable build-portable] [--rounds 3] [--quick]
       [--kernel NAME]   (SPOOL_KERNEL for the portable side, e.g. avx2 on an AVX-512 CPU)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(build, quick, env):
    args = [os.path.join(build, "bench", "gemm"), "--no-peer"] + (["--quick"] if quick else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--native", default="build")
    ap.add_argument("--portable", default="build-portable")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--kernel", default="")
    a = ap.parse_args()
    native_env = dict(os.environ)
    native_env.pop("SPOOL_KERNEL", None)
    native_env.pop("SPOOL_GEMM_KERNEL", None)
    portable_env = dict(native_env)
    if a.kernel:
        portable_env["SPOOL_KERNEL"] = a.kernel
    samples = {}  # (m, k, n, threads) -> {"native": [...], "portable": [...], kernels}
    for r in range(a.rounds):
        order = [("native", a.native, native_env), ("portable", a.portable, portable_env)]
        if r % 2:
            order.reverse()
        for side, build, env in order:
            for line in run(build, a.quick, env):
                key = (line["m"], line["k"], line["n"], line["threads"])
                s = samples.setdefault(key, {"native": [], "portable": []})
                s[side].append(line["gflops"])
                s[side + "_kernel"] = line["kernel"]
    worst = None
    for (m, k, n, threads), s in sorted(samples.items()):
        nat, por = statistics.median(s["native"]), statistics.median(s["portable"])
        ratio = por / nat
        worst = ratio if worst is None else min(worst, ratio)
        print(json.dumps({"bench": "portable_gemm", "m": m, "k": k, "n": n, "threads": threads,
                          "native_kernel": s["native_kernel"], "portable_kernel": s["portable_kernel"],
                          "native_gflops": round(nat, 2), "portable_gflops": round(por, 2),
                          "ratio": round(ratio, 4), "target": 0.95}))
    print(json.dumps({"bench": "portable_gemm_summary", "rounds": a.rounds, "worst_ratio": round(worst, 4),
                      "target": 0.95, "met": worst >= 0.95}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
