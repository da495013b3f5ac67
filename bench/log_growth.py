#!/usr/bin/env python
"""Do the Raft log on disk and each node's memory stay bounded?  Starts a
3-node cluster, writes N puts over a key space with geocache-bench in
--steps equal parts, and after each part prints each node's Raft log
directory size and resident memory (RSS), and the part's puts/s.

    python bench/log_growth.py --writes 200000 --snapshot-entries 1000
    python bench/log_growth.py --writes 10000000 --steps 20     # issue 8's memory run
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from geocachedb.harness.processes import Cluster

BIN = os.path.dirname(sys.executable)


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--writes", type=int, default=200000)
    p.add_argument("--snapshot-entries", type=int, default=None,
                   help="the node's --snapshot-entries (default: the node's own default)")
    p.add_argument("--steps", type=int, default=4, help="report after each of this many equal parts")
    p.add_argument("--keyspace", type=int, default=100000)
    p.add_argument("--wal-segment-size", type=int, default=4, help="MiB per log segment (default 4)")
    args = p.parse_args(argv)
    base = tempfile.mkdtemp(prefix="geocache-loggrowth-")
    extra = ["--wal-segment-size", str(args.wal_segment_size), "--admin", "none"]
    if args.snapshot_entries is not None:
        extra += ["--snapshot-entries", str(args.snapshot_entries)]
    cluster = Cluster(base, 3, extra=tuple(extra))
    try:
        cluster.start()
        cluster.leader(timeout=20)
        per_step = args.writes // args.steps
        for step in range(1, args.steps + 1):
            started = time.monotonic()
            subprocess.run(
                [os.path.join(BIN, "geocache-bench"), "--endpoints", ",".join(cluster.addresses),
                 "--concurrency", "256", "--connections", "4", "--ops", str(per_step),
                 "--keyspace", str(args.keyspace), "--json"],
                check=True, capture_output=True,
            )
            sizes = {n: dir_bytes(os.path.join(node.data_dir, "raft")) for n, node in cluster.nodes.items()}
            rss = {n: node.rss_bytes() for n, node in cluster.nodes.items()}
            rate = per_step / (time.monotonic() - started)
            print("after %8d writes (%6.0f puts/s): raft log MiB %s   RSS MiB %s" % (
                step * per_step, rate,
                " ".join("%s=%.1f" % (n, s / 2**20) for n, s in sorted(sizes.items())),
                " ".join("%s=%.0f" % (n, r / 2**20) for n, r in sorted(rss.items()))), flush=True)
    finally:
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
