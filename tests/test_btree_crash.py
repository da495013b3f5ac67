"""Crash safety of the B+Tree backend.

Two ways of crashing it:

* SIGKILL: a child process (this file run as a script) applies numbered
  batches and reports each one after `apply_batch` returns; the test kills
  it at random moments, reopens the file, runs the checker and verifies
  that the store holds exactly the state after batch ``a`` where ``a`` is
  the last reported batch or the one after it (committed but killed before
  it could say so) -- every reported commit there, nothing uncommitted.

* Power loss, simulated in-process: the pager's writes are held in memory
  until its fsync, and the "crash" lets a random subset of the unsynced
  writes reach the file, some of them torn at a 512-byte sector boundary.
  A crash before the meta page is synced must give the old state, one
  after it the new state, and a torn meta page the old state.

Batches are a deterministic function of their number, so the parent can
rebuild the expected state; some batches are whole-store `snapshot_in`s
and some carry overflow values, so big commits get killed too.
"""

import os
import random
import signal
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from geocachedb import snapshot_format
from geocachedb.storage.btree import BTreeStorage
from geocachedb.storage.btree.check import check_file
from geocachedb.storage.btree.node import PAGE_SIZE, decode_meta

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BTREE_CRASH_KILLS / BTREE_CRASH_SEED / BTREE_POWER_LOSS_SEED for hunts; the defaults keep
# the suite fast.
KILLS = int(os.environ.get("BTREE_CRASH_KILLS", 24))
SEED = int(os.environ.get("BTREE_CRASH_SEED", 20240611))
POWER_LOSS_SEED = int(os.environ.get("BTREE_POWER_LOSS_SEED", 7))


def make_batch(seed, i):
    """Return ``("batch", puts, deletes)`` or ``("snapshot", items, [])``
    for batch number ``i``."""
    rng = random.Random(seed * 1_000_003 + i)
    if i % 41 == 0:
        ids = sorted(set(rng.randrange(3000) for _ in range(rng.randrange(0, 800))))
        return "snapshot", [(b"key-%06d" % k, _value(rng, i)) for k in ids], []
    puts = [(b"key-%06d" % rng.randrange(3000), _value(rng, i)) for _ in range(rng.randrange(0, 250))]
    deletes = [b"key-%06d" % rng.randrange(3000) for _ in range(rng.randrange(0, 150))]
    return "batch", puts, deletes


def _value(rng, i):
    if rng.random() < 0.02:
        return b"%d:" % i + rng.randbytes(rng.randrange(2000, 30000))
    return b"%d:" % i + rng.randbytes(rng.randrange(0, 300))


def apply_to_model(model, seed, i):
    kind, puts, deletes = make_batch(seed, i)
    if kind == "snapshot":
        return dict(puts)
    for key, value in puts:
        model[key] = value
    for key in deletes:
        model.pop(key, None)
    return model


def child(directory, seed):
    store = BTreeStorage(directory)
    i = store.applied_index()
    sys.stdout.write("ready %d\n" % i)
    sys.stdout.flush()
    while True:
        i += 1
        kind, puts, deletes = make_batch(seed, i)
        if kind == "snapshot":
            store.snapshot_in(snapshot_format.encode(i, puts))
        else:
            store.apply_batch(puts, deletes, i)
        sys.stdout.write("%d\n" % i)
        sys.stdout.flush()


class SigkillTests(SynchronousTestCase):
    def test_sigkill_at_random_moments_keeps_exactly_the_committed_batches(self):
        directory = os.path.abspath(self.mktemp())
        rng = random.Random(SEED)
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        model = {}
        model_index = 0
        last = 0
        progressed = 0
        for kill in range(KILLS):
            proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), directory, str(SEED)],
                stdout=subprocess.PIPE,
                cwd=REPO,
                env=env,
            )
            try:
                if kill % 6 == 5:
                    # Now and then kill it while it is still opening the file.
                    time.sleep(rng.uniform(0.0, 0.15))
                else:
                    ready = proc.stdout.readline()
                    self.assertTrue(ready.startswith(b"ready"), ready)
                    time.sleep(rng.uniform(0.0, 0.25))
                proc.send_signal(signal.SIGKILL)
                out = proc.stdout.read()
            finally:
                proc.kill()
                proc.wait()
                proc.stdout.close()
            reported = [int(word) for word in out.split() if word.isdigit()]
            if reported:
                self.assertEqual(reported, list(range(reported[0], reported[-1] + 1)))
                last = reported[-1]

            report = check_file(directory, lock=True)
            self.assertEqual(report.problems, [], "after kill %d" % kill)
            store = BTreeStorage(directory)
            try:
                applied = store.applied_index()
                self.assertIn(applied, (last, last + 1), "after kill %d" % kill)
                while model_index < applied:
                    model_index += 1
                    model = apply_to_model(model, SEED, model_index)
                self.assertEqual(store.stats()["keys"], len(model))
                self.assertEqual(store.scan(), sorted(model.items()), "after kill %d" % kill)
            finally:
                store.close()
            progressed += applied - last
            last = applied
        # The kills did land in the middle of real work.
        self.assertGreater(last, KILLS)


class _PowerLoss(BaseException):
    """Raised by the simulated fsync when the power goes."""


class _UnsyncedWrites:
    """Hooks a store's pager: writes wait in memory until fsync; `crash`
    lets a random subset of them reach the file, some torn."""

    def __init__(self, store, rng, crash_at_sync):
        self.pager = store._pager
        self.rng = rng
        self.crash_at_sync = crash_at_sync
        self.syncs = 0
        self.buffer = []
        self.pager._pwrite_all = self.write
        self.pager._fsync = self.fsync

    def write(self, bufs, offset):
        self.buffer.append((offset, b"".join(bufs)))

    def fsync(self):
        if self.syncs == self.crash_at_sync:
            raise _PowerLoss()
        self.syncs += 1
        for offset, data in self.buffer:
            os.pwrite(self.pager._fd, data, offset)
        self.buffer = []

    def crash(self, txn):
        """Let some unsynced writes land, torn or whole; return True when
        the meta page of ``txn`` is complete and valid on disk."""
        fd = self.pager._fd
        for offset, data in self.buffer:
            fate = self.rng.random()
            if fate < 0.3:
                continue  # never reached the disk
            if fate < 0.6:
                # Torn anywhere, not only at a sector boundary: the meta
                # page's checksum has to catch that.
                data = data[: self.rng.randrange(1, len(data))]
            os.pwrite(fd, data, offset)
        meta, _ = decode_meta(os.pread(fd, PAGE_SIZE, (txn % 2) * PAGE_SIZE))
        self.pager.close()
        return meta is not None and meta.txn == txn


class PowerLossTests(SynchronousTestCase):
    def test_power_loss_at_any_point_of_a_commit_gives_old_or_new_state(self):
        directory = self.mktemp()
        rng = random.Random(POWER_LOSS_SEED)
        seed = 99
        model = {}
        outcomes = set()
        for i in range(1, 121):
            store = BTreeStorage(directory)
            self.assertEqual(store.applied_index(), i - 1)
            kind, puts, deletes = make_batch(seed, i)
            # 0: crash at the fsync of the pages (meta not yet written);
            # 1: at the fsync of the meta; 2: no crash.
            crash_at = rng.choice([0, 1, 2])
            hook = _UnsyncedWrites(store, rng, crash_at)
            committed = True
            txn = store._pager.txn + 1
            try:
                if kind == "snapshot":
                    store.snapshot_in(snapshot_format.encode(i, puts))
                else:
                    store.apply_batch(puts, deletes, i)
            except _PowerLoss:
                committed = hook.crash(txn)
                outcomes.add("crash at sync %d, meta %s" % (crash_at, "landed" if committed else "lost"))
            else:
                store.close()
            expected = apply_to_model(dict(model), seed, i)
            report = check_file(directory)
            self.assertEqual(report.problems, [], "batch %d" % i)
            store = BTreeStorage(directory)
            try:
                state = store.scan()
                if committed:
                    self.assertEqual(store.applied_index(), i)
                    self.assertEqual(state, sorted(expected.items()))
                else:
                    # Lost: the old state, whole.  (The batch is retried.)
                    self.assertEqual(store.applied_index(), i - 1)
                    self.assertEqual(state, sorted(model.items()))
                    if kind == "snapshot":
                        store.snapshot_in(snapshot_format.encode(i, puts))
                    else:
                        store.apply_batch(puts, deletes, i)
            finally:
                store.close()
            model = expected
        self.assertEqual(
            outcomes,
            {"crash at sync 0, meta lost", "crash at sync 1, meta lost", "crash at sync 1, meta landed"},
        )

    def test_torn_newest_meta_page_falls_back_to_the_previous_commit(self):
        directory = self.mktemp()
        store = BTreeStorage(directory)
        store.apply_batch([(b"a", b"1")], [], 1)
        store.apply_batch([(b"b", b"2")], [], 2)
        slot = store._pager.txn % 2
        path = store.file
        store.close()
        with open(path, "r+b") as f:
            f.seek(slot * 4096 + 512)
            f.write(b"\xff" * 512)  # the second sector of the meta page never landed
        store = BTreeStorage(directory)
        try:
            self.assertEqual(store.applied_index(), 1)
            self.assertEqual(store.scan(), [(b"a", b"1")])
            self.assertIn("meta page %d is damaged" % slot, store._pager.recovery)
            # The next commit goes into the damaged slot and all is well.
            store.apply_batch([(b"c", b"3")], [], 2)
        finally:
            store.close()
        report = check_file(directory)
        self.assertEqual((report.problems, report.warnings), ([], []))


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]))
