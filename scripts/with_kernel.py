#!/usr/bin/env python3
"""Run a test program with every kernel forced to one instruction set (SPOOL_KERNEL=NAME).

A portable build's tests run the kernel suites once per instruction set it was compiled for, so
each compilation is checked against the references, not only the one this CPU picks. When this
CPU cannot run NAME, spool refuses it with "SPOOL_KERNEL: 'NAME' is not a kernel set ..."; the
test is then skipped (exit 77, Meson's skip code) instead of failed.

Usage: with_kernel.py NAME PROGRAM [ARGS...]
"""
import os
import subprocess
import sys


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    name, cmd = argv[0], argv[1:]
    env = dict(os.environ, SPOOL_KERNEL=name)
    env.pop("SPOOL_GEMM_KERNEL", None)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    if p.returncode != 0 and f"SPOOL_KERNEL: '{name}' is not a kernel set" in p.stdout + p.stderr:
        print(f"with_kernel.py: this CPU does not run {name}; skipped")
        return 77
    return p.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
