"""Backup from a 3-node cluster with the CLI, restore into a new node with
--restore, identical contents; a corrupted backup is refused clearly."""

import hashlib
import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

from geocachedb.client import BlockingClient
from geocachedb.harness.processes import Cluster, NodeProcess, free_port

BIN = os.path.dirname(sys.executable)


def content_hash(address):
    digest = hashlib.sha256()
    count = 0
    with BlockingClient([address], timeout=10) as c:
        start = b""
        while True:
            pairs, more = c.range(start=start, limit=1000)
            for key, value in pairs:
                digest.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
                count += 1
            if not more or not pairs:
                return count, digest.hexdigest()
            start = pairs[-1][0] + b"\0"


class BackupRestoreTests(TestCase):
    timeout = 180

    def test_backup_then_restore_gives_identical_contents(self):
        base = os.path.abspath(self.mktemp())
        cluster = Cluster(base, 3, extra=("--heartbeat-interval", "50", "--election-timeout", "500",
                                          "--snapshot-entries", "500"))
        self.addCleanup(cluster.stop_all)
        cluster.start()
        cluster.leader(timeout=15)
        with BlockingClient(cluster.addresses) as c:
            for i in range(1500):
                c.put(b"key%05d" % i, os.urandom(50) + b"\x00\xff")
            for i in range(0, 1500, 7):
                c.delete(b"key%05d" % i)
        expected = content_hash(cluster["node2"].address)
        path = os.path.join(base, "backup.gcb")
        r = subprocess.run([os.path.join(BIN, "geocache-cli"), "--addr", cluster["node2"].address, "backup", path],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("backup of %d keys" % expected[0], r.stdout)
        cluster.stop_all()

        restored = NodeProcess("solo", free_port(), os.path.join(base, "solo"), os.path.join(base, "solo.log"),
                               extra=["--restore", path])
        self.addCleanup(restored.stop)
        restored.start().wait_listening()
        self.assertEqual(content_hash(restored.address), expected)
        # It is a working one-node cluster: writes go through.
        with BlockingClient([restored.address]) as c:
            c.put(b"after-restore", b"1")
            self.assertEqual(c.get(b"after-restore"), b"1")

        corrupt = os.path.join(base, "corrupt.gcb")
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0xFF
        with open(corrupt, "wb") as f:
            f.write(bytes(data))
        bad = NodeProcess("solo2", free_port(), os.path.join(base, "solo2"), os.path.join(base, "solo2.log"),
                          extra=["--restore", corrupt])
        self.addCleanup(bad.stop)
        bad.start()
        bad.proc.wait(30)
        self.assertNotEqual(bad.proc.returncode, 0)
        log = bad.read_log()
        self.assertIn("cannot restore from %s" % corrupt, log)
        self.assertIn("checksum", log)
        self.assertNotIn("Traceback", log)
