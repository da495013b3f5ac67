"""Log compaction and InstallSnapshot with real processes: the Raft log on
disk stays bounded under a write load, and a node whose data was wiped
catches up from a snapshot."""

import asyncio
import os
import shutil
import time

from twisted.trial.unittest import TestCase

from geocachedb.client import AsyncioClient, BlockingClient
from geocachedb.harness.processes import Cluster

EXTRA = ("--heartbeat-interval", "50", "--election-timeout", "500", "--snapshot-entries", "300")


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def write_many(addresses, n, prefix):
    async def main():
        async with AsyncioClient(addresses, timeout=10) as c:
            for start in range(0, n, 200):
                await asyncio.gather(*(c.put(b"%s%06d" % (prefix, i), b"v" * 200) for i in range(start, min(n, start + 200))))

    asyncio.run(main())


class SnapshotTests(TestCase):
    timeout = 240

    def setUp(self):
        self.cluster = Cluster(os.path.abspath(self.mktemp()), 3, extra=EXTRA)
        self.addCleanup(self.cluster.stop_all)
        self.cluster.start()
        self.cluster.leader(timeout=15)

    def test_raft_log_on_disk_stays_bounded(self):
        write_many(self.cluster.addresses, 3000, b"a")
        first = {n: dir_bytes(os.path.join(node.data_dir, "raft")) for n, node in self.cluster.nodes.items()}
        write_many(self.cluster.addresses, 6000, b"b")
        second = {n: dir_bytes(os.path.join(node.data_dir, "raft")) for n, node in self.cluster.nodes.items()}
        for node_id in self.cluster.nodes:
            # Twice the writes, yet the log does not double: old segments go.
            self.assertLess(second[node_id], 2 * first[node_id] + 2 * 2**20, (first, second))

    def test_wiped_node_re_added_catches_up_from_a_snapshot(self):
        leader = self.cluster.leader()
        victim = next(n for n in self.cluster.nodes if n != leader)
        node = self.cluster[victim]
        others = [self.cluster[n].address for n in self.cluster.nodes if n != victim]
        node.kill()
        shutil.rmtree(node.data_dir)
        # The operator's procedure for a lost disk: remove the member, then
        # let the wiped machine join again (under the same id).
        with BlockingClient(others) as c:
            c.remove_member(victim)
        write_many(others, 2000, b"w")
        write_many(others, 1000, b"x")  # applies after the flushes: the leader compacts
        node.extra = [a for a in node.extra] + ["--join", others[0]]
        node.peers = {}
        node.start().wait_listening()
        with BlockingClient([node.address], timeout=5) as c:
            deadline = time.monotonic() + 30
            while True:
                pairs, _ = c.range(prefix=b"w", limit=5000, serializable=True)
                if len(pairs) == 2000:
                    break
                self.assertLess(time.monotonic(), deadline, "wiped node has %d of 2000 keys" % len(pairs))
                time.sleep(0.2)
        with BlockingClient([self.cluster[leader].address]) as c:
            expected, _ = c.range(prefix=b"w", limit=5000)
        self.assertEqual(pairs, expected)
        # It came through InstallSnapshot: the leader's log was compacted
        # past what the wiped node needed.
        self.assertIn("sending snapshot", self.cluster[leader].read_log())
