"""Crash test for `geocachedb.wal` with real files and a real process.

A child process appends batches to a WriteAheadLog, syncs each one and only
then reports it on stdout, exactly like a Raft host that sends its messages
after `sync` returns.  The test SIGKILLs it at a random moment, reopens the
log, and checks that every reported batch (and the reported hard state) is
there; then it lets a new child continue in the same directory, several
times over.  Small segments make the child cross file boundaries and compact
often, so the kills also land between a rollover, a compaction and the
deletion of old files.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

import geocachedb
from geocachedb.wal import WriteAheadLog

CHILD = r"""
import random, sys
from geocachedb.raft.types import Entry, HardState
from geocachedb.wal import WriteAheadLog

def payload(index, term):
    return (b"%d/%d;" % (index, term)) * (1 + index % 9)

directory, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
wal = WriteAheadLog(directory, segment_bytes=8192)
term = wal.hard_state().term + 1
wal.set_hard_state(HardState(term, "n1", wal.hard_state().commit))
wal.sync()
sys.stdout.write("term %d\n" % term)
sys.stdout.flush()
while True:
    first = wal.last_index() + 1
    last = first + rng.randint(1, 60) - 1
    wal.append([Entry(i, term, payload(i, term)) for i in range(first, last + 1)])
    if rng.random() < 0.3:
        wal.set_hard_state(HardState(term, "n1", last))
    if rng.random() < 0.1 and wal.last_index() - wal.first_index() > 200:
        index = wal.last_index() - 100
        wal.compact(index, wal.term(index))
    wal.sync()
    sys.stdout.write("batch %d %d %d\n" % (first, last, term))
    sys.stdout.flush()
"""


def payload(index, term):
    return (b"%d/%d;" % (index, term)) * (1 + index % 9)


class KilledWriterTests(SynchronousTestCase):
    rounds = 6

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="wal-crash-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(geocachedb.__file__)))
        self.env["PYTHONPATH"] = root + os.pathsep + self.env.get("PYTHONPATH", "")

    def run_child_until_killed(self, seed, rng):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, self.dir, str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        try:
            # Wait until it is writing, then kill it at a random moment.
            first = child.stdout.readline()
            if not first:
                self.fail("child died: %s" % child.stderr.read().decode())
            time.sleep(rng.uniform(0.0, 0.25))
            child.send_signal(signal.SIGKILL)
            child.wait()
            rest = child.stdout.read()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
            child.stderr.close()
        self.assertEqual(child.returncode, -signal.SIGKILL)
        lines = (first + rest).decode().split("\n")
        # A line cut by the kill was never completely reported: ignore it.
        return [line.split() for line in lines[:-1]]

    def test_every_reported_batch_survives_sigkill(self):
        rng = random.Random(4242)
        reported = []  # (first, last, term)
        max_term = 0
        for round_ in range(self.rounds):
            for report in self.run_child_until_killed(1000 + round_, rng):
                if report[0] == "term":
                    max_term = int(report[1])
                else:
                    reported.append(tuple(int(x) for x in report[1:]))
            wal = WriteAheadLog(self.dir, segment_bytes=8192)
            try:
                self.assertGreaterEqual(wal.hard_state().term, max_term)
                self.assertGreaterEqual(wal.last_index(), max(r[1] for r in reported))
                for first, last, term in reported:
                    # Entries below the compaction point are legitimately gone.
                    for index in range(max(first, wal.first_index()), last + 1):
                        (entry,) = wal.entries(index, index + 1)
                        self.assertEqual((entry.term, entry.data), (term, payload(index, term)))
                stats = wal.stats()
            finally:
                wal.close()
        self.assertGreater(len(reported), 0)
        # Compaction kept the files few although the child crossed many.
        self.assertGreater(max(r[1] for r in reported), 500)
        self.assertLess(stats["segments"], 20)
