#!/usr/bin/env python3
"""T-small training step of a portable build (-Dnative=false, kernels chosen at run time) against
a native build.

Runs bench/train_step's spool child (--child spool: steps only, no peak measurement, no LibTorch)
from both build directories in alternating rounds (native first in odd rounds, portable first in
even ones, so the two share the machine's drift), and prints one JSON line with each side's
median step time over all rounds' steps, the kernel set the portable side ran, and
portable / native (issue 11's target: <= 1.05). With --before, a third build (a native build of
an earlier commit) runs in the same rounds, and native / before says whether the native build
slowed down.

Usage: bench/portable_train_step.py [--native build] [--portable build-portable] [--rounds 4]
       [--steps 10] [--warmup 3] [--threads 1] [--before DIR]
       [--kernel NAME]   (SPOOL_KERNEL for the portable side, e.g. avx2 on an AVX-512 CPU)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(build, a, env):
    args = [os.path.join(build, "bench", "train_step"), "--child", "spool", "--setting", str(a.threads),
            "--steps", str(a.steps), "--warmup", str(a.warmup)]
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout
    steps = []
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "STEP":  # STEP forward backward optimizer loss (seconds)
            steps.append(1e3 * (float(f[1]) + float(f[2]) + float(f[3])))
    return steps


def kernel(build, env):
    """The kernel set the build runs (bench/gemm --quick reports it on every line)."""
    out = subprocess.run([os.path.join(build, "bench", "gemm"), "--no-peer", "--quick"], check=True,
                         capture_output=True, text=True, env=env).stdout
    return next(json.loads(l)["kernel"] for l in out.splitlines() if l.startswith("{") and '"kernel"' in l)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--native", default="build")
    ap.add_argument("--portable", default="build-portable")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kernel", default="")
    ap.add_argument("--before", default="")
    a = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("SPOOL_KERNEL", "SPOOL_GEMM_KERNEL")}
    sides = {"native": (a.native, env), "portable": (a.portable, dict(env, SPOOL_KERNEL=a.kernel) if a.kernel else env)}
    if a.before:
        sides["before"] = (a.before, env)
    samples = {side: [] for side in sides}
    for r in range(a.rounds):
        order = list(sides)
        for side in (order if r % 2 == 0 else order[::-1]):
            build, side_env = sides[side]
            samples[side] += run(build, a, side_env)
    med = {side: statistics.median(s) for side, s in samples.items()}
    nat, por = med["native"], med["portable"]
    line = {"bench": "portable_train_step", "threads": a.threads, "rounds": a.rounds, "steps": a.steps,
            "native_kernel": kernel(a.native, env), "portable_kernel": kernel(a.portable, sides["portable"][1]),
            "native_ms": round(nat, 1), "portable_ms": round(por, 1), "ratio": round(por / nat, 4),
            "target": 1.05, "met": por / nat <= 1.05}
    if a.before:
        line.update(before_ms=round(med["before"], 1), native_over_before=round(nat / med["before"], 4))
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
