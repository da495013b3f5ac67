#!/usr/bin/env python
"""A/B: two checkouts' nodes under the same load, in alternating rounds.

Each round starts a fresh cluster of checkout A's nodes (PYTHONPATH set to
A for the `twistd` processes only), runs this checkout's `geocache-bench`
against it, stops it, then does the same for B.  The load generator is the
same for both, so only the server differs.  Prints ops/s, p99 and the
nodes' CPU per write for each round, and the medians.  Machines here are
shared and noisy: compare the two columns of one run, never runs.

    git worktree add /tmp/ab-old <commit>
    python bench/ab_bench.py /tmp/ab-old . --rounds 3 --concurrency 64 --duration 8
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from geocachedb.harness.processes import checkout_cluster

BIN = os.path.dirname(sys.executable)


def one_round(checkout, nodes, concurrency, duration):
    base = tempfile.mkdtemp(prefix="geocache-ab-")
    cluster = checkout_cluster(checkout, base, nodes, ("--admin", "none"))
    try:
        cluster.leader(timeout=20)

        def bench(c, seconds):
            cmd = [os.path.join(BIN, "geocache-bench"), "--endpoints", ",".join(cluster.addresses),
                   "--concurrency", str(c), "--connections", str(max(1, min(8, c // 16))),
                   "--duration", str(seconds), "--read-ratio", "0", "--json"]
            return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                             timeout=seconds + 60).stdout)

        bench(16, 1.0)  # warm-up
        before = sum(node.cpu_seconds() for node in cluster.nodes.values())
        result = bench(concurrency, duration)
        cpu = sum(node.cpu_seconds() for node in cluster.nodes.values()) - before
        return {"ops_per_sec": result["ops_per_sec"], "p99_ms": result["latency_ms"]["p99"],
                "errors": result["errors"], "cpu_us": 1e6 * cpu / max(1, result["ops"])}
    finally:
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="checkout A (e.g. a worktree of the old commit)")
    p.add_argument("b", help="checkout B")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=8.0)
    args = p.parse_args(argv)
    runs = {"A": [], "B": []}
    for i in range(args.rounds):
        for name, checkout in (("A", args.a), ("B", args.b)):
            r = one_round(checkout, args.nodes, args.concurrency, args.duration)
            runs[name].append(r)
            print("round %d %s: %8.0f ops/s  p99 %6.2f ms  server CPU %6.1f us/write  errors %s"
                  % (i + 1, name, r["ops_per_sec"], r["p99_ms"] or 0, r["cpu_us"], r["errors"] or "none"),
                  flush=True)
    for name in ("A", "B"):
        rs = runs[name]
        print("median %s: %8.0f ops/s  p99 %6.2f ms  server CPU %6.1f us/write"
              % (name, statistics.median(r["ops_per_sec"] for r in rs),
                 statistics.median(r["p99_ms"] or 0 for r in rs),
                 statistics.median(r["cpu_us"] for r in rs)))


if __name__ == "__main__":
    main()
