#!/usr/bin/env python3
"""Check that the compilations of tensor/gemm_arch.cpp and tensor/kernels_arch.cpp (one per
instruction set) share no symbol.

Each compilation's code lives in its own namespace; a symbol they still share -- a weak
(inline/template) definition emitted out of line -- would let the linker keep the AVX-512 copy
for every caller, and the program would die on a CPU without AVX-512. So every defined, non-local
symbol of an arch library must be one of its own entry points (gemm_table(), kernel_table()), and
none may be weak.

Usage: check_arch_symbols.py LIB.a [LIB.a ...]   (the spool_arch_<arch> libraries)
"""
import re
import subprocess
import sys


def symbols(path):
    out = subprocess.run(["nm", "-C", "--defined-only", path], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3:
            yield parts[1], parts[2]


def own_arch_type(arch):
    """The xsimd architecture type a spool_arch_<arch> library is compiled for."""
    return {"x86_64": "xsimd::sse2>", "avx2": "xsimd::fma3<xsimd::avx2>", "avx512": "xsimd::avx512bw>"}.get(arch, "\0")


def main(paths):
    bad = []
    for path in paths:
        arch = re.search(r"spool_arch_(\w+)\.a$", path)
        if not arch:
            bad.append(f"{path}: not a spool_arch_<arch>.a library")
            continue
        entries = {f"spool::kernels::{arch.group(1)}::{table}()" for table in ("gemm_table", "kernel_table")}
        found = set()
        for kind, name in symbols(path):
            if kind in "tbdrn":  # local to the object
                continue
            if name.startswith("DW.ref."):  # the exception personality's reference: data, same in all
                continue
            if kind == "T" and name in entries:
                found.add(name)
                continue
            if kind == "W" and name.startswith("xsimd::") and own_arch_type(arch.group(1)) in name:
                # an xsimd template for this library's own instruction set (its batch type in the
                # signature): no other compilation defines or calls it
                continue
            bad.append(f"{path}: {kind} {name}")
        for entry in sorted(entries - found):
            bad.append(f"{path}: no {entry}")
        print(f"{path}: ok" if found == entries else f"{path}: missing entry point")
    for b in bad:
        print("shared or unexpected symbol:", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
