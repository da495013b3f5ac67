"""Membership and leadership with real processes: grow a cluster under a
write load with --join, replace a killed node, shrink back, move the
leader — from the CLI, the Python client and the admin shell."""

import os
import subprocess
import sys
import threading
import time

from twisted.trial.unittest import TestCase

from geocachedb import errors
from geocachedb.client import BlockingClient
from geocachedb.harness.processes import Cluster, NodeProcess, admin_command, free_port

FAST = ("--heartbeat-interval", "50", "--election-timeout", "500", "--snapshot-entries", "500")
BIN = os.path.dirname(sys.executable)


class MembershipTests(TestCase):
    timeout = 240

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        self.cluster = Cluster(self.base, 3, extra=FAST)
        self.addCleanup(self.cluster.stop_all)
        self.cluster.start()
        self.cluster.leader(timeout=15)

    def joiner(self, node_id):
        node = NodeProcess(node_id, free_port(), os.path.join(self.base, node_id),
                           os.path.join(self.base, node_id + ".log"),
                           extra=FAST + ("--join", self.cluster["node1"].address))
        self.cluster.nodes[node_id] = node
        return node

    def wait_members(self, client, predicate, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                members = client.members()
                if predicate(members):
                    return members
            except errors.GeoCacheError:
                pass
            self.assertLess(time.monotonic(), deadline, "membership did not settle")
            time.sleep(0.2)

    def test_grow_to_five_under_load_replace_a_dead_node_and_shrink_back(self):
        stop = threading.Event()
        acked = []

        def load():
            with BlockingClient(self.cluster.addresses[:3], timeout=5) as c:
                i = 0
                while not stop.is_set():
                    try:
                        c.put(b"load%05d" % i, b"x")
                        acked.append(i)
                    except errors.GeoCacheError:
                        pass
                    i += 1

        writer = threading.Thread(target=load)
        writer.start()
        try:
            for node_id in ("node4", "node5"):
                self.joiner(node_id).start().wait_listening()
            with BlockingClient(self.cluster.addresses, timeout=10) as c:
                members = self.wait_members(
                    c, lambda ms: sorted((m["id"], m["role"]) for m in ms)
                    == [("node%d" % i, "voter") for i in range(1, 6)])
                self.assertEqual(len(members), 5)
                # A node dies for good: remove it, add a fresh one in its place.
                victim = next(m["id"] for m in members if not m["is_leader"] and m["id"] != "node1")
                self.cluster[victim].kill()
                c.remove_member(victim)
                self.joiner("node6").start().wait_listening()
                self.wait_members(c, lambda ms: {m["id"] for m in ms if m["role"] == "voter"}
                                  == {"node1", "node2", "node3", "node4", "node5", "node6"} - {victim})
            # Shrink back to three, the leader among the removed.  A removed
            # node keeps answering `members` from its last view (no leader
            # ever again), so each step asks only the nodes still in.
            remaining = sorted({"node1", "node2", "node3", "node4", "node5", "node6"} - {victim})
            for _ in range(2):
                with BlockingClient([self.cluster[n].address for n in remaining], timeout=10) as c:
                    members = self.wait_members(c, lambda ms: any(m["is_leader"] for m in ms))
                    leader = next(m["id"] for m in members if m["is_leader"])
                    c.remove_member(leader)
                remaining.remove(leader)
                with BlockingClient([self.cluster[n].address for n in remaining], timeout=10) as c:
                    self.wait_members(c, lambda ms: leader not in {m["id"] for m in ms}
                                      and any(m["is_leader"] for m in ms))
            with BlockingClient([self.cluster[n].address for n in remaining], timeout=10) as c:
                final = self.wait_members(c, lambda ms: len(ms) == 3 and any(m["is_leader"] for m in ms))
        finally:
            stop.set()
            writer.join(30)
        self.assertGreater(len(acked), 50)
        survivors = [m["id"] for m in final]
        with BlockingClient([self.cluster[n].address for n in survivors], timeout=10) as c:
            pairs, _ = c.range(prefix=b"load", limit=10000)
        present = {int(k[4:]) for k, _ in pairs}
        self.assertEqual(set(acked) - present, set())
        for node_id in survivors:
            with BlockingClient([self.cluster[node_id].address], timeout=10) as c:
                deadline = time.monotonic() + 20
                while len(c.range(prefix=b"load", limit=10000, serializable=True)[0]) < len(present):
                    self.assertLess(time.monotonic(), deadline, "%s did not catch up" % node_id)
                    time.sleep(0.2)

    def test_membership_from_a_follower_admin_shell(self):
        # An operator uses the shell of whichever node they are on: every
        # membership command is passed on to the leader.
        leader = self.cluster.leader()
        shell, other = [n for n in self.cluster.nodes if n != leader]
        out = admin_command(self.cluster[shell], "remove-member " + other, timeout=30)
        self.assertNotIn("error", out)
        self.assertNotIn(other, out.split("members:", 1)[1])
        out = admin_command(self.cluster[shell], "add-member %s %s --learner"
                            % (other, self.cluster[other].address), timeout=30)
        self.assertIn(other + " (learner)", out)
        deadline = time.monotonic() + 20
        while True:  # refused until the learner has caught up
            out = admin_command(self.cluster[shell], "promote " + other, timeout=30)
            if "error" not in out or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertNotIn("error", out)
        self.assertNotIn("(learner)", out)
        self.assertEqual(len(out.split("members:", 1)[1].split(",")), 3)
        out = admin_command(self.cluster[shell], "transfer-leader " + other, timeout=30)
        self.assertIn(other + "*", out)
        self.assertEqual(self.cluster.leader(timeout=10), other)

    def test_transfer_leadership_from_cli_and_admin_shell(self):
        leader = self.cluster.leader()
        target = next(n for n in self.cluster.nodes if n != leader)
        r = subprocess.run([os.path.join(BIN, "geocache-cli"), "--addr", ",".join(self.cluster.addresses),
                            "member", "transfer", target], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.cluster.leader(timeout=10), target)
        back = next(n for n in self.cluster.nodes if n not in (target,))
        out = admin_command(self.cluster[target], "transfer-leader " + back)
        self.assertIn(back + "*", out)
        self.assertEqual(self.cluster.leader(timeout=10), back)
        r = subprocess.run([os.path.join(BIN, "geocache-cli"), "--addr", self.cluster.addresses[0],
                            "member", "list"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout.strip().splitlines()), 3)
        self.assertIn("leader", r.stdout)
