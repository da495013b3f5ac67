"""Revisions, history, transactions, incr and compaction on a real 3-node
cluster of `twistd` processes, through the BlockingClient and through
geocache-cli as a subprocess (writes through a follower too, so they are
forwarded)."""

import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

from geocachedb import errors
from geocachedb.client import BlockingClient, Compare, KeyValue, Op
from geocachedb.harness.processes import Cluster, admin_command

BIN = os.path.dirname(sys.executable)
FAST = ("--heartbeat-interval", "50", "--election-timeout", "500")


class RevisionTests(TestCase):
    timeout = 120

    def setUp(self):
        self.cluster = Cluster(os.path.abspath(self.mktemp()), 3, extra=FAST)
        self.addCleanup(self.cluster.stop_all)
        self.cluster.start()
        self.leader = self.cluster.leader(timeout=15)
        self.follower = next(n for n in self.cluster.nodes if n != self.leader)

    def cli(self, *args, stdin=None, node=None):
        address = self.cluster[node or self.follower].address
        return subprocess.run([os.path.join(BIN, "geocache-cli"), "--addr", address, *args],
                              input=stdin, capture_output=True, text=True, timeout=30)

    def test_client_revisions_txn_incr_and_compaction(self):
        with BlockingClient([self.cluster[self.follower].address], timeout=5.0) as c:
            self.assertIsNone(c.put(b"k", b"v1"))
            self.assertEqual(c.put(b"k", b"v2", prev_kv=True).value, b"v1")
            r = c.put_kv(b"k", b"v3", prev_kv=True)
            self.assertEqual(r.prev_kv.value, b"v2")
            kv = c.get_kv(b"k")
            self.assertIsInstance(kv, KeyValue)
            self.assertEqual((kv.value, kv.version, kv.mod_revision), (b"v3", 3, r.revision))
            first = kv.create_revision
            self.assertEqual(c.get(b"k", revision=first), b"v1")
            self.assertEqual(c.get_kv(b"k", revision=first + 1).value, b"v2")
            if first > 1:
                self.assertIsNone(c.get(b"k", revision=first - 1))
            self.assertRaises(errors.FutureRevision, c.get, b"k", revision=r.revision + 100)

            # Compare-and-swap on the mod revision: the first wins, the
            # second (stale) one fails and reads instead.
            swap = c.txn().when(Compare.mod(b"k") == kv.mod_revision).then(
                Op.put(b"k", b"v4"), Op.incr(b"n", 5)).otherwise(Op.get(b"k"))
            won = swap.commit()
            self.assertTrue(won.succeeded)
            self.assertEqual(won.responses[1], 5)
            lost = c.txn().when(Compare.mod(b"k") == kv.mod_revision).then(
                Op.put(b"k", b"stale")).otherwise(Op.get(b"k")).commit()
            self.assertFalse(lost.succeeded)
            self.assertEqual(lost.responses[0].kvs[0].value, b"v4")
            self.assertEqual(c.txn().when(Compare.version(b"nope") == 0).then(
                Op.put(b"nope", b"created")).commit().succeeded, True)

            self.assertEqual(c.incr(b"n"), 6)
            self.assertEqual(c.incr(b"n", -10), -4)
            key = c.put_sequential(b"q/", b"job")
            self.assertTrue(key.startswith(b"q/"))
            self.assertEqual(c.get(key), b"job")

            result = c.range_kvs(prefix=b"", keys_only=True, descending=True)
            self.assertEqual([kv.key for kv in result.kvs], sorted([b"k", b"n", b"nope", key], reverse=True))
            self.assertEqual(c.range(prefix=b"n", count_only=True), ([], False))
            deleted = c.delete_range(prefix=b"q/", prev_kv=True)
            self.assertEqual((deleted.count, deleted.prev_kvs[0].value), (1, b"job"))

            now = c.get_kv(b"k").mod_revision
            c.compact(now)
            e = self.assertRaises(errors.Compacted, c.get, b"k", revision=first)
            self.assertIn("compact", str(e))
            self.assertEqual(c.get(b"k", revision=now), b"v4")
            self.assertEqual(c.status()["compact_revision"], now)

        out = admin_command(self.cluster[self.follower], "status")
        self.assertIn("compact rev", out)
        self.assertIn(str(now), out)
        out = admin_command(self.cluster[self.leader], "get k --rev %d" % now)
        self.assertIn("v4", out)
        self.assertIn("version 4", out)

    def test_cli_get_rev_history_txn_incr_compact(self):
        for value in ("one", "two", "three"):
            self.assertEqual(self.cli("put", "k", value).returncode, 0)
        r = self.cli("get", "k", "--kv")
        self.assertEqual(r.returncode, 0, r.stderr)
        meta = dict(line.split(None, 1) for line in r.stdout.splitlines())
        mod, created = int(meta["mod_revision"]), int(meta["create_revision"])
        self.assertEqual((meta["value"], meta["version"]), ("three", "3"))
        r = self.cli("get", "k", "--rev", str(created))
        self.assertEqual((r.returncode, r.stdout), (0, "one\n"))

        r = self.cli("history", "k")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), [
            "%d three" % mod, "%d two" % (created + 1), "%d one" % created, "(created at revision %d)" % created])

        txn = 'mod("k") = "%d"\nvalue("k") != "x"\n\nput k four\nincr n 2\nget k\n\nget k\n' % mod
        r = self.cli("txn", stdin=txn)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "SUCCESS\n\nOK\n\n2\n\nk\nfour\n")
        r = self.cli("txn", stdin=txn)  # the same compare is stale now
        self.assertEqual(r.stdout, "FAILURE\n\nk\nfour\n")

        r = self.cli("txn", stdin='mod("k") = "five"\n\nput k never\n')
        self.assertEqual(r.returncode, 2)
        self.assertIn("line 1", r.stderr)
        self.assertEqual(self.cli("get", "k").stdout, "four\n")

        self.assertEqual(self.cli("incr", "n", "3").stdout, "5\n")
        r = self.cli("incr", "k")
        self.assertEqual(r.returncode, 2)
        self.assertIn("INVALID_ARGUMENT", r.stderr)
        r = self.cli("put-seq", "q/", "job")
        self.assertTrue(r.stdout.startswith("q/"), r.stdout + r.stderr)

        r = self.cli("get", "k", "--kv")
        now = int(dict(line.split(None, 1) for line in r.stdout.splitlines())["mod_revision"])
        r = self.cli("compact", str(now))
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.cli("get", "k", "--rev", str(created))
        self.assertEqual(r.returncode, 2)
        self.assertIn("COMPACTED", r.stderr)
        r = self.cli("history", "k")
        self.assertEqual(r.stdout.splitlines()[0], "%d four" % now)
        self.assertIn("compacted", r.stdout.splitlines()[1])
        r = self.cli("status")
        self.assertIn("compact_revision %d" % now, " ".join(r.stdout.split()))

        self.assertEqual(self.cli("put", "p/a", "1").returncode, 0)
        self.assertEqual(self.cli("put", "p/b", "2").returncode, 0)
        r = self.cli("del", "p/", "--prefix")
        self.assertEqual(r.stdout, "deleted 2 keys\n")
        r = self.cli("del", "a", "--range-end", "z")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.cli("get", "k").returncode, 1)
