#!/usr/bin/env python
"""Does the Raft log on disk stay bounded?  Starts a 3-node cluster with a
small --snapshot-entries, writes N keys with geocache-bench, and prints each
node's Raft log directory size after every quarter of the load.

    python bench/log_growth.py --writes 200000 --snapshot-entries 1000
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from geocachedb.testing.processes import Cluster

BIN = os.path.dirname(sys.executable)


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--writes", type=int, default=200000)
    p.add_argument("--snapshot-entries", type=int, default=1000)
    p.add_argument("--keyspace", type=int, default=100000)
    p.add_argument("--wal-segment-size", type=int, default=4, help="MiB per log segment (default 4)")
    args = p.parse_args(argv)
    base = tempfile.mkdtemp(prefix="geocache-loggrowth-")
    cluster = Cluster(base, 3, extra=("--snapshot-entries", str(args.snapshot_entries),
                                       "--wal-segment-size", str(args.wal_segment_size), "--admin", "none"))
    try:
        cluster.start()
        cluster.leader(timeout=20)
        for quarter in range(1, 5):
            subprocess.run(
                [os.path.join(BIN, "geocache-bench"), "--endpoints", ",".join(cluster.addresses),
                 "--concurrency", "256", "--connections", "4", "--ops", str(args.writes // 4),
                 "--keyspace", str(args.keyspace), "--json"],
                check=True, capture_output=True,
            )
            sizes = {n: dir_bytes(os.path.join(node.data_dir, "raft")) for n, node in cluster.nodes.items()}
            rss = {n: node.rss_bytes() for n, node in cluster.nodes.items()}
            print("after %7d writes: raft log MiB %s   RSS MiB %s" % (
                quarter * args.writes // 4,
                " ".join("%s=%.1f" % (n, s / 2**20) for n, s in sorted(sizes.items())),
                " ".join("%s=%.0f" % (n, r / 2**20) for n, r in sorted(rss.items()))), flush=True)
    finally:
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
