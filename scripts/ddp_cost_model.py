#!/usr/bin/env python3
"""The ring all-reduce cost model of docs/distributed.md: the time one data-parallel step
spends all-reducing the gradients of a model, for 2..64 nodes on 10/25/100 Gb/s links, and
the compute time per step a node needs for 50% and 90% scaling efficiency without overlap.

Ring all-reduce of S bytes over N nodes: a reduce-scatter and an all-gather, each N - 1
rounds in which every node sends and receives S / N bytes, so each node moves
2 (N - 1) / N * S bytes each way; every round of every bucket also pays a latency alpha:

    t(N) = 2 (N - 1) / N * S / bandwidth + 2 (N - 1) * buckets * alpha

Usage: scripts/ddp_cost_model.py [--params 3.94e6 100e6] [--alpha-us 20] [--bucket-mb 25]
"""
import argparse
import math


def allreduce_seconds(nbytes, nodes, gbit, alpha, bucket_bytes):
    buckets = max(1, math.ceil(nbytes / bucket_bytes))
    return 2 * (nodes - 1) / nodes * nbytes / (gbit * 1e9 / 8) + 2 * (nodes - 1) * buckets * alpha


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=float, nargs="+", default=[3_943_400, 100e6],
                    help="parameter counts (float32 gradients)")
    ap.add_argument("--alpha-us", type=float, default=20.0, help="latency per message, microseconds (TCP)")
    ap.add_argument("--bucket-mb", type=float, default=25.0, help="DDP bucket size, MiB")
    a = ap.parse_args()
    nodes = [2, 4, 8, 16, 32, 64]
    for p in a.params:
        nbytes = 4 * p
        print(f"\n{p / 1e6:.2f}M parameters: {nbytes / 2**20:.1f} MiB of float32 gradients per step, "
              f"each node sends and receives 2(N-1)/N of it\n")
        print("| link | " + " | ".join(f"N = {n}" for n in nodes) + " |")
        print("|---|" + "---|" * len(nodes))
        for gbit in (10, 25, 100):
            t = [allreduce_seconds(nbytes, n, gbit, a.alpha_us * 1e-6, a.bucket_mb * 2**20) for n in nodes]
            print(f"| {gbit} Gb/s, all-reduce | " + " | ".join(f"{x * 1e3:.1f} ms" for x in t) + " |")
            # efficiency = compute / (compute + comm): 50% at compute = comm, 90% at 9 x comm
            print(f"| {gbit} Gb/s, compute for 90% | " + " | ".join(f"{9 * x * 1e3:.0f} ms" for x in t) + " |")


if __name__ == "__main__":
    main()
