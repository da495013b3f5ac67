#!/usr/bin/env python
"""Failover time of a real 3-node cluster: from SIGKILL of the leader to the
first write acknowledged by the new leader, repeated and summarised.

    python bench/failover_bench.py --rounds 10 [--election-timeout 1000]

Each round: find the leader, SIGKILL it, then write in a loop through the
survivors until one write succeeds; the time is measured from the kill.
The killed node is restarted and the cluster is left to settle before the
next round.  Stops every node it started.
"""

import argparse
import shutil
import statistics
import tempfile
import time

from geocachedb import errors
from geocachedb.client import BlockingClient
from geocachedb.harness.processes import Cluster


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--heartbeat-interval", default="100")
    p.add_argument("--election-timeout", default="1000")
    args = p.parse_args(argv)
    base = tempfile.mkdtemp(prefix="geocache-failover-")
    extra = ("--heartbeat-interval", args.heartbeat_interval, "--election-timeout", args.election_timeout, "--admin", "none")
    cluster = Cluster(base, 3, extra=extra)
    times = []
    try:
        cluster.start()
        for round_no in range(args.rounds):
            leader = cluster.leader(timeout=30)
            survivors = [n for n in cluster.nodes if n != leader]
            with BlockingClient([cluster[n].address for n in survivors], timeout=0.5) as c:
                c.put(b"warm", b"%d" % round_no)
                killed = time.monotonic()
                cluster[leader].kill()
                while True:
                    try:
                        c.put(b"failover", b"%d" % round_no)
                        break
                    except errors.GeoCacheError:
                        if time.monotonic() - killed > 30:
                            raise
            elapsed = time.monotonic() - killed
            times.append(elapsed)
            print("round %2d: leader %s killed, first write acknowledged after %.3f s" % (round_no + 1, leader, elapsed), flush=True)
            cluster[leader].start().wait_listening()
            time.sleep(1.0)
    finally:
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    print("median %.3f s, min %.3f s, max %.3f s over %d rounds (election timeout %s ms)"
          % (statistics.median(times), min(times), max(times), len(times), args.election_timeout))


if __name__ == "__main__":
    main()
