#!/usr/bin/env python
"""Benchmark a real geocachedb cluster (1 or 3 `twistd` nodes on loopback).

Starts the nodes, runs `geocache-bench` (a separate process, so the load
generator's CPU is not the node's) for each concurrency level and mix, and
prints ops/s, latency percentiles, and the nodes' CPU time per operation
(user + system over the load window, summed over the nodes).  Stops every
node it started.

    python bench/cluster_bench.py --nodes 3 --concurrency 1,64,256 --duration 10
    python bench/cluster_bench.py --nodes 1 --concurrency 1,64 --reads
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from geocachedb.harness.processes import Cluster

BIN = os.path.dirname(sys.executable)


def run_bench(cluster, concurrency, duration, read_ratio, consistency, procs, connections):
    cmd = [
        os.path.join(BIN, "geocache-bench"),
        "--endpoints", ",".join(cluster.addresses),
        "--concurrency", str(concurrency),
        "--connections", str(connections),
        "--duration", str(duration),
        "--read-ratio", str(read_ratio),
        "--consistency", consistency,
        "--procs", str(procs),
        "--json",
    ]
    before = {n: node.cpu_seconds() for n, node in cluster.nodes.items()}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = {n: node.cpu_seconds() for n, node in cluster.nodes.items()}
    result = json.loads(out)
    cpu = {n: after[n] - before[n] for n in before}
    result["server_cpu_seconds"] = cpu
    ops = result["ops"] or 1
    result["server_cpu_us_per_op"] = round(1e6 * sum(cpu.values()) / ops, 1)
    result["server_rss_mb"] = {n: round(node.rss_bytes() / 2**20, 1) for n, node in cluster.nodes.items()}
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--concurrency", default="1,16,64,256")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--reads", action="store_true", help="also run 100%% linearizable reads")
    p.add_argument("--storage", default="lmdb")
    p.add_argument("--procs", type=int, default=1, help="load processes per run")
    p.add_argument("--connections", type=int, default=0, help="connections (default: one per 16 in flight, at most 8)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    base = tempfile.mkdtemp(prefix="geocache-bench-")
    cluster = Cluster(base, args.nodes, extra=("--storage", args.storage, "--admin", "none"))
    results = []
    try:
        cluster.start()
        cluster.leader(timeout=20)
        # Warm up: the first writes create files and fill caches.
        run_bench(cluster, 16, 1.0, 0.0, "linearizable", 1, 1)
        mixes = [("put", 0.0)] + ([("get", 1.0)] if args.reads else [])
        for name, ratio in mixes:
            for c in [int(x) for x in args.concurrency.split(",")]:
                conns = args.connections or max(1, min(8, c // 16))
                r = run_bench(cluster, c, args.duration, ratio, "linearizable", args.procs, conns)
                r["mix"] = name
                results.append(r)
                if not args.json:
                    lat = r["latency_ms"]
                    print(
                        "%d node(s) %-4s in-flight %4d: %8.0f ops/s  p50 %6.2f ms  p99 %7.2f ms  "
                        "errors %s  server CPU %6.1f us/op  client CPU %5.1f%%"
                        % (args.nodes, name, c, r["ops_per_sec"], lat["p50"] or 0, lat["p99"] or 0,
                           r["errors"] or "none", r["server_cpu_us_per_op"], r["client_cpu_percent"]),
                        flush=True,
                    )
    finally:
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
