#!/usr/bin/env python3
"""A failed rank must not leave the others hanging: run tests/dist/failure_child.cpp as 2 ranks
under mpirun, once with rank 1 hanging and once with rank 1 killed (SIGKILL), and check that
the job fails (non-zero exit) within a bound, with a clear message: spool's DistError naming
rank 0 and the collective for the hang; for the kill, that or mpirun's report of the dead rank.
Usage: failures.py MPIRUN CHILD [mpirun options...]   (tests/meson.build runs it)
"""
import subprocess
import sys
import time

BOUND = 60  # seconds: the child's timeout is 2 s; mpirun needs a few more to tear the job down


def run(mpirun, child, opts, mode):
    start = time.monotonic()
    try:
        p = subprocess.run([mpirun, "-np", "2"] + opts + [child, mode], capture_output=True, text=True,
                           timeout=BOUND + 60)
    except subprocess.TimeoutExpired:
        return None, BOUND + 60, "mpirun still running: the job hangs"
    return p.returncode, time.monotonic() - start, p.stdout + p.stderr


def main():
    mpirun, child, opts = sys.argv[1], sys.argv[2], sys.argv[3:]
    ok = True
    timed_out = "dist::all_reduce timed out on rank 0 of 2 after 2 s"
    for mode, accept in (("hang", [timed_out]), ("kill", [timed_out, "signal 9", "failed on rank 0"])):
        code, seconds, out = run(mpirun, child, opts, mode)
        good = code not in (None, 0) and seconds < BOUND and any(a in out for a in accept)
        print(f"{mode}: exit {code} after {seconds:.1f} s; {'ok' if good else 'FAILED'}")
        if not good:
            print("  expected a non-zero exit within", BOUND, "s and one of", accept)
            print("  output:\n    " + "\n    ".join(out.strip().splitlines()[-30:]))
            ok = False
        else:
            line = next(l for l in out.splitlines() if any(a in l for a in accept))
            print("  " + line.strip())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
