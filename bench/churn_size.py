#!/usr/bin/env python
"""Disk under churn: the store's size after N overwrites of K keys.

Starts one node of the given checkout (PYTHONPATH set for the node only),
writes ``--ops`` puts over ``--keys`` keys with this checkout's
`geocache-bench`, waits for the write-behind flush, stops the node and
reports the size of its storage directory and of the whole data directory
(the Raft log included).  Run it for a checkout without history and for
one with automatic compaction, in one session, to compare:

    python bench/churn_size.py /tmp/ab-old --ops 1000000 --keys 10000
    python bench/churn_size.py . --ops 1000000 --keys 10000 --node-args "--auto-compact-revisions 10000"
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from geocachedb.harness.processes import checkout_cluster

BIN = os.path.dirname(sys.executable)


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkout")
    p.add_argument("--ops", type=int, default=1000000)
    p.add_argument("--keys", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--node-args", default="", help="extra twistd geocache options")
    args = p.parse_args(argv)
    base = tempfile.mkdtemp(prefix="geocache-churn-")
    cluster = checkout_cluster(args.checkout, base, 1, ("--admin", "none", *shlex.split(args.node_args)))
    try:
        cluster.leader(timeout=20)
        started = time.monotonic()
        cmd = [os.path.join(BIN, "geocache-bench"), "--endpoints", ",".join(cluster.addresses),
               "--concurrency", str(args.concurrency), "--connections", "8", "--ops", str(args.ops),
               "--keyspace", str(args.keys), "--json"]
        result = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                           timeout=3600).stdout)
        elapsed = time.monotonic() - started
        time.sleep(3)  # the write-behind flush (once a second) and auto-compaction
        node = next(iter(cluster.nodes.values()))
        data_dir = node.data_dir
        cluster.stop_all()
        storage = du(os.path.join(data_dir, "kv"))
        print("%s: %d puts over %d keys in %.0f s (%.0f/s, errors %s): storage %.1f MiB, "
              "data directory %.1f MiB" % (args.checkout, result["ops"], args.keys, elapsed,
                                            result["ops_per_sec"], result["errors"] or "none",
                                            storage / 2 ** 20, du(data_dir) / 2 ** 20))
    finally:
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
