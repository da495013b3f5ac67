"""A real 3-node cluster of `twistd` processes: replication, failover,
pauses, partitions, restarts, and a concurrent history checked for
linearizability.  Every process is stopped by PID in tearDown."""

import os
import random
import signal
import threading
import time

from twisted.trial.unittest import TestCase

from geocachedb import errors
from geocachedb.client import BlockingClient
from geocachedb.harness.processes import Cluster, admin_command
from geocachedb.testing.linearizability import History, check

FAST = ("--heartbeat-interval", "50", "--election-timeout", "500", "--enable-fault-injection")


class ClusterTestCase(TestCase):
    timeout = 180

    def setUp(self):
        self.cluster = Cluster(os.path.abspath(self.mktemp()), 3, extra=FAST)
        self.addCleanup(self.cluster.stop_all)
        self.cluster.start()
        self.leader = self.cluster.leader(timeout=15)

    def client(self, *node_ids, timeout=5.0):
        nodes = node_ids or tuple(self.cluster.nodes)
        return BlockingClient([self.cluster[n].address for n in nodes], timeout=timeout)

    def followers(self):
        return [n for n in self.cluster.nodes if n != self.leader]


class ReplicationTests(ClusterTestCase):
    def test_put_on_one_node_get_on_the_others(self):
        with self.client("node1") as c:
            c.put(b"k", b"from node1")
        for node_id in ("node2", "node3"):
            with self.client(node_id) as c:
                self.assertEqual(c.get(b"k"), b"from node1")

    def test_writes_through_a_follower_are_forwarded(self):
        follower = self.followers()[0]
        with self.client(follower) as c:
            for i in range(50):
                c.put(b"f%d" % i, b"v%d" % i)
            self.assertTrue(c.delete(b"f0"))
        with self.client(self.leader) as c:
            pairs, _ = c.range(prefix=b"f")
        self.assertEqual(len(pairs), 49)

    def test_serializable_reads_reach_every_follower(self):
        with self.client() as c:
            c.put(b"s", b"1")
        for node_id in self.followers():
            with self.client(node_id) as c:
                deadline = time.monotonic() + 5
                while c.get(b"s", serializable=True) != b"1":
                    self.assertLess(time.monotonic(), deadline, "follower never applied the write")
                    time.sleep(0.05)


    def test_a_cut_off_follower_catches_up_soon_after_healing(self):
        # While cut off, the leader's AppendEntries to it are lost and tail
        # batching holds the rest until an answer comes: the heartbeat
        # answer after healing must restart replication, not the next
        # write or an election.
        cut = self.followers()[0]
        admin_command(self.cluster[self.leader], "isolate " + cut)
        admin_command(self.cluster[cut], "isolate " + self.leader)
        with self.client(self.leader) as c:
            for i in range(200):
                c.put(b"c%03d" % i, b"v%d" % i)
        for node_id in (self.leader, cut):
            admin_command(self.cluster[node_id], "heal")
        with self.client(cut) as c:
            deadline = time.monotonic() + 5
            while c.get(b"c199", serializable=True) != b"v199":
                self.assertLess(time.monotonic(), deadline, "the healed follower did not catch up")
                time.sleep(0.05)
            pairs, _ = c.range(prefix=b"c", serializable=True)
        self.assertEqual(len(pairs), 200)
        self.assertEqual(self.cluster.leader(timeout=5), self.leader)


class FailoverTests(ClusterTestCase):
    def test_sigkill_leader_new_leader_writes_continue_old_catches_up(self):
        with self.client() as c:
            c.put(b"before", b"1")
        old = self.leader
        killed_at = time.monotonic()
        self.cluster[old].kill()
        survivors = self.followers()
        new = self.cluster.leader(timeout=10, among=survivors, other_than=old)
        self.assertLess(time.monotonic() - killed_at, 3.0, "no new leader within 3 s")
        self.assertNotEqual(new, old)
        with self.client(*survivors) as c:
            for i in range(20):
                c.put(b"after%d" % i, b"x")
        self.cluster[old].start().wait_listening()
        with self.client(old) as c:
            deadline = time.monotonic() + 10
            while c.get(b"after19", serializable=True) != b"x":
                self.assertLess(time.monotonic(), deadline, "old leader did not catch up")
                time.sleep(0.1)
            self.assertEqual(c.get(b"before"), b"1")

    def test_sigstop_leader_steps_down_no_write_lost_no_stale_read(self):
        old = self.leader
        with self.client() as c:
            c.put(b"k", b"v1")
        self.cluster[old].signal(signal.SIGSTOP)
        try:
            survivors = self.followers()
            self.cluster.leader(timeout=10, among=survivors, other_than=old)
            with self.client(*survivors) as c:
                c.put(b"k", b"v2")
        finally:
            self.cluster[old].signal(signal.SIGCONT)
        # The old leader must not serve the old value as a linearizable read.
        with self.client(old, timeout=10) as c:
            self.assertEqual(c.get(b"k"), b"v2")
        self.assertNotEqual(self.cluster.leader(timeout=10), None)
        with self.client() as c:
            self.assertEqual(c.get(b"k"), b"v2")

    def test_minority_partition_refuses_then_converges(self):
        old = self.leader
        majority = self.followers()
        with self.client() as c:
            c.put(b"p", b"0")
        admin_command(self.cluster[old], "isolate " + " ".join(majority))
        for node_id in majority:
            admin_command(self.cluster[node_id], "isolate " + old)
        new = self.cluster.leader(timeout=10, among=majority, other_than=old)
        self.assertIn(new, majority)
        # The old leader alone: an error in bounded time, never a hang.
        with self.client(old, timeout=3.0) as c:
            started = time.monotonic()
            self.assertRaises(errors.GeoCacheError, c.put, b"p", b"minority")
            self.assertRaises(errors.GeoCacheError, c.get, b"p")
            self.assertLess(time.monotonic() - started, 10)
        with self.client(*majority) as c:
            c.put(b"p", b"majority")
        for node_id in self.cluster.nodes:
            admin_command(self.cluster[node_id], "heal")
        for node_id in self.cluster.nodes:
            with self.client(node_id, timeout=10) as c:
                self.assertEqual(c.get(b"p"), b"majority")

    def test_full_cluster_restart_keeps_every_acknowledged_write(self):
        acked = {}
        with self.client() as c:
            for i in range(200):
                c.put(b"r%03d" % i, b"v%d" % i)
                acked[b"r%03d" % i] = b"v%d" % i
        for node in self.cluster.nodes.values():
            node.kill()
        for node in self.cluster.nodes.values():
            node.start()
        for node in self.cluster.nodes.values():
            node.wait_listening()
        self.cluster.leader(timeout=15)
        with self.client(timeout=10) as c:
            pairs, _ = c.range(prefix=b"r", limit=1000)
        self.assertEqual(dict(pairs), acked)


class LinearizableHistoryTests(ClusterTestCase):
    def test_concurrent_clients_with_a_leader_kill_are_linearizable(self):
        history = History()
        lock = threading.Lock()
        stop_at = time.monotonic() + 8.0
        keys = [b"h%d" % i for i in range(4)]
        node_ids = sorted(self.cluster.nodes)
        acked_puts = []

        def client_loop(n):
            rng = random.Random(n)
            order = node_ids[n % 3 :] + node_ids[: n % 3]
            c = BlockingClient([self.cluster[x].address for x in order], timeout=3.0)
            try:
                i = 0
                while time.monotonic() < stop_at:
                    key = rng.choice(keys)
                    op = rng.choice(("put", "put", "get", "delete"))
                    value = b"c%d-%d" % (n, i) if op == "put" else None
                    i += 1
                    with lock:
                        op_id = history.invoke(n, op, key, value, time.monotonic())
                    try:
                        if op == "put":
                            output = c.put(key, value)
                        elif op == "get":
                            output = c.get(key)
                        else:
                            output = c.delete(key)
                    except errors.GeoCacheError:
                        with lock:
                            # A failed read did not happen; a failed write
                            # may still take effect.
                            history.fail(op_id) if op == "get" else history.unknown(op_id)
                        continue
                    with lock:
                        history.complete(op_id, output, time.monotonic())
                        if op == "put":
                            acked_puts.append((key, value))
            finally:
                c.close()

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        time.sleep(3.0)
        self.cluster[self.leader].kill()
        for t in threads:
            t.join(60)
        self.cluster[self.leader].start().wait_listening()
        self.assertGreater(len(history), 100)
        self.assertGreater(len(acked_puts), 20)
        with self.client(timeout=10) as c:
            # Every acknowledged write is present at the end: the final
            # reads join the history and must linearize after everything.
            for key in keys:
                op_id = history.invoke(99, "get", key, None, time.monotonic())
                history.complete(op_id, c.get(key), time.monotonic())
        verdict = check(history)
        self.assertTrue(verdict.ok, getattr(verdict, "explanation", verdict))


class CompareAndSwapTests(ClusterTestCase):
    def test_cas_increments_survive_two_leader_kills_and_history_survives_restart(self):
        # 8 clients, each connected through a different order of all three
        # nodes, increment one counter by compare-and-swap on its mod
        # revision while the leader is SIGKILLed twice.
        from geocachedb.client import Compare, Op

        with self.client() as c:
            c.put(b"counter", b"0")
            start_rev = c.get_kv(b"counter").mod_revision
        lock = threading.Lock()
        counts = {"ok": 0, "unknown": 0}
        stop_at = time.monotonic() + 10.0
        node_ids = sorted(self.cluster.nodes)

        def client_loop(n):
            order = node_ids[n % 3:] + node_ids[: n % 3]
            c = BlockingClient([self.cluster[x].address for x in order], timeout=3.0)
            try:
                while time.monotonic() < stop_at:
                    try:
                        kv = c.get_kv(b"counter")
                    except errors.GeoCacheError:
                        continue
                    new = b"%d" % (int(kv.value) + 1)
                    try:
                        result = c.txn().when(Compare.mod(b"counter") == kv.mod_revision) \
                            .then(Op.put(b"counter", new)).commit()
                    except errors.GeoCacheError:
                        with lock:
                            counts["unknown"] += 1
                        continue
                    if result.succeeded:
                        with lock:
                            counts["ok"] += 1
            finally:
                c.close()

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for _ in range(2):
            time.sleep(3.0)
            leader = self.cluster.leader(timeout=10)
            self.cluster[leader].kill()
            time.sleep(0.5)
            self.cluster[leader].start()
        for t in threads:
            t.join(60)
        for node in self.cluster.nodes.values():
            node.wait_listening()
        self.cluster.leader(timeout=15)
        with self.client(timeout=10) as c:
            final = int(c.get(b"counter"))
            end_rev = c.get_kv(b"counter").mod_revision
        self.assertGreater(counts["ok"], 20)
        self.assertLessEqual(counts["ok"], final)
        self.assertLessEqual(final, counts["ok"] + counts["unknown"])
        # Every successful CAS made exactly one revision of the counter.
        self.assertGreaterEqual(end_rev - start_rev, final)
        # A full restart: reads at old revisions still answer.
        self.cluster.stop_all()
        self.cluster.start()
        self.cluster.leader(timeout=15)
        with self.client(timeout=10) as c:
            self.assertEqual(c.get(b"counter", revision=start_rev), b"0")
            self.assertEqual(int(c.get(b"counter")), final)
