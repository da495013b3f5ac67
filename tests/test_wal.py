"""Tests for `geocachedb.wal`: the durable Raft log.

Behaviour through the `IRaftLog` API (append, read, conflict truncation,
compaction, reset, hard state), durability across reopen, recovery from a
torn tail and refusal of damage in the middle, and the system calls a sync
costs.  The crash test with a SIGKILLed child process is in
`tests/test_wal_crash.py`.
"""

import os
import shutil
import tempfile
import time

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from geocachedb.interfaces import IRaftLog
from geocachedb.raft.types import CONF, Entry, HardState
from geocachedb.wal import CorruptLogError, LogFailedError, LogLockedError, WriteAheadLog
from geocachedb.wal import format as fmt
from geocachedb.wal import log as wal_log


def make_entries(first, last, term, size=30):
    return [Entry(i, term, (b"%d/%d:" % (i, term)).ljust(size, b"x")) for i in range(first, last + 1)]


def segment_files(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".wal"))


class WALTestMixin:
    segment_bytes = 1 << 20

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="wal-test-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.opened = []

        def close_all():
            for w in self.opened:
                w.close()

        self.addCleanup(close_all)

    def open(self, directory=None, segment_bytes=None):
        w = WriteAheadLog(directory or self.dir, segment_bytes=segment_bytes or self.segment_bytes)
        self.opened.append(w)
        return w

    def reopen(self, w, segment_bytes=None):
        w.close()
        return self.open(w.directory, segment_bytes or w.segment_bytes)

    def capture_log(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    def wal_events(self, events, level_name):
        return [
            e
            for e in events
            if e.get("log_namespace") == "geocachedb.wal.log" and e["log_level"].name == level_name
        ]

    def assertLogHolds(self, w, expected, base=(0, 0)):
        """``w`` holds exactly ``expected`` after the compaction point ``base``."""
        self.assertEqual(w.first_index(), base[0] + 1)
        self.assertEqual(w.last_index(), base[0] + len(expected))
        self.assertEqual(w.term(base[0]), base[1])
        self.assertEqual(w.entries(w.first_index(), w.last_index() + 1), expected)
        for e in expected:
            self.assertEqual(w.term(e.index), e.term)


class BasicTests(WALTestMixin, SynchronousTestCase):
    def test_provides_IRaftLog(self):
        self.assertTrue(verifyObject(IRaftLog, self.open()))

    def test_new_log_is_empty(self):
        w = self.open()
        self.assertEqual((w.first_index(), w.last_index(), w.term(0)), (1, 0, 0))
        self.assertEqual(w.hard_state(), HardState())
        self.assertEqual(w.entries(1, 1), [])
        self.assertRaises(IndexError, w.term, 1)
        self.assertEqual(w.stats()["entries"], 0)
        self.assertEqual(w.stats()["segments"], 1)

    def test_directory_is_created_when_missing(self):
        w = self.open(os.path.join(self.dir, "a", "b"))
        w.append(make_entries(1, 3, 1))
        w.sync()
        self.assertLogHolds(self.reopen(w), make_entries(1, 3, 1))

    def test_append_then_read_entries_and_terms(self):
        w = self.open()
        batch = make_entries(1, 5, 1) + make_entries(6, 9, 2)
        batch.append(Entry(10, 2, b"conf", CONF))
        w.append(batch)
        self.assertLogHolds(w, batch)
        self.assertEqual(w.entries(3, 6), batch[2:5])
        self.assertEqual(w.entries(10, 11)[0].kind, CONF)

    def test_entries_max_bytes_stops_before_passing_it_but_returns_one(self):
        w = self.open()
        w.append(make_entries(1, 10, 1, size=100))
        self.assertEqual(len(w.entries(1, 11, max_bytes=250)), 2)
        self.assertEqual(len(w.entries(1, 11, max_bytes=300)), 3)
        self.assertEqual(len(w.entries(1, 11, max_bytes=10)), 1)
        self.assertEqual(len(w.entries(1, 11, max_bytes=0)), 1)

    def test_reads_outside_the_log_raise_index_error(self):
        w = self.open()
        w.append(make_entries(1, 10, 1))
        w.compact(4, 1)
        self.assertRaises(IndexError, w.term, 3)
        self.assertRaises(IndexError, w.term, 11)
        self.assertRaises(IndexError, w.entries, 4, 6)
        self.assertRaises(IndexError, w.entries, 5, 12)
        self.assertEqual(w.entries(7, 7), [])

    def test_append_rejects_gaps_and_compacted_indexes(self):
        w = self.open()
        w.append(make_entries(1, 5, 1))
        self.assertRaises(ValueError, w.append, make_entries(7, 8, 1))
        self.assertRaises(ValueError, w.append, [Entry(6, 1), Entry(8, 1)])
        w.compact(3, 1)
        self.assertRaises(ValueError, w.append, make_entries(3, 4, 2))
        self.assertLogHolds(w, make_entries(4, 5, 1), base=(3, 1))
        w.append([])  # nothing to do
        self.assertEqual(w.last_index(), 5)

    def test_reopen_keeps_synced_entries_and_hard_state(self):
        w = self.open()
        w.append(make_entries(1, 50, 1))
        w.set_hard_state(HardState(1, "node1", 40))
        w.sync()
        w = self.reopen(w)
        self.assertLogHolds(w, make_entries(1, 50, 1))
        self.assertEqual(w.hard_state(), HardState(1, "node1", 40))

    def test_close_without_sync_loses_only_unsynced_writes(self):
        w = self.open()
        w.append(make_entries(1, 5, 1))
        w.sync()
        w.append(make_entries(6, 9, 1))
        w.set_hard_state(HardState(3, "x", 2))
        w = self.reopen(w)
        self.assertLogHolds(w, make_entries(1, 5, 1))
        self.assertEqual(w.hard_state(), HardState())

    def test_hard_state_round_trip_last_one_wins(self):
        w = self.open()
        for hs in [HardState(1, None, 0), HardState(2, "n\u00e9ud-2", 7), HardState(5, None, 9)]:
            w.set_hard_state(hs)
            w.sync()
            self.assertEqual(self.reopen(w).hard_state(), hs)
            w = self.opened[-1]

    def test_hard_state_is_copied_not_aliased(self):
        w = self.open()
        hs = HardState(1, "a", 1)
        w.set_hard_state(hs)
        hs.term = 99
        self.assertEqual(w.hard_state().term, 1)
        w.hard_state().term = 98
        self.assertEqual(w.hard_state().term, 1)

    def test_stats(self):
        w = self.open(segment_bytes=4096)
        w.append(make_entries(1, 200, 1, size=100))
        w.sync()
        stats = w.stats()
        self.assertEqual(stats["entries"], 200)
        self.assertGreater(stats["segments"], 1)
        on_disk = sum(os.path.getsize(os.path.join(self.dir, n)) for n in segment_files(self.dir))
        self.assertEqual(stats["bytes_on_disk"], on_disk)

    def test_second_open_of_the_same_directory_is_refused(self):
        w = self.open()
        e = self.assertRaises(LogLockedError, WriteAheadLog, self.dir)
        self.assertIn(str(os.getpid()), str(e))
        w.close()
        self.open()  # released by close

    def test_closed_log_refuses_writes(self):
        w = self.open()
        w.close()
        self.assertRaises(ValueError, w.append, make_entries(1, 1, 1))
        self.assertRaises(ValueError, w.sync)
        w.close()  # idempotent

    def test_io_error_in_sync_fails_the_log_for_good(self):
        w = self.open()
        w.append(make_entries(1, 3, 1))

        def broken(fd):
            raise OSError(5, "Input/output error")

        self.patch(wal_log, "_fdatasync", broken)
        self.assertRaises(OSError, w.sync)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertRaises(LogFailedError, w.append, make_entries(4, 4, 1))
        self.assertRaises(LogFailedError, w.sync)

    def test_large_unsynced_appends_are_written_out_early_and_synced_later(self):
        self.patch(wal_log, "_FLUSH_BYTES", 2000)
        w = self.open(segment_bytes=4096)
        w.append(make_entries(1, 100, 1, size=100))  # > 2000 bytes: written, not synced
        self.assertGreater(os.path.getsize(os.path.join(self.dir, segment_files(self.dir)[-1])), 0)
        w.append(make_entries(101, 120, 1, size=100))
        w.sync()
        self.assertLogHolds(self.reopen(w), make_entries(1, 120, 1, size=100))

    def test_failed_open_releases_the_lock(self):
        w = self.open()
        w.append(make_entries(1, 3, 1))
        w.sync()
        w.close()
        with open(os.path.join(self.dir, "%016x.wal" % 1), "r+b") as f:
            f.seek(2)
            f.write(b"\x7f")  # the type byte of the segment header
        self.assertRaises(CorruptLogError, WriteAheadLog, self.dir)
        self.assertRaises(CorruptLogError, WriteAheadLog, self.dir)  # not LogLockedError

    def test_entry_that_cannot_be_encoded_fails_the_log(self):
        w = self.open()
        w.append(make_entries(1, 2, 1))
        w.sync()
        self.assertRaises(Exception, w.append, [Entry(3, -1, b"x")])
        self.assertRaises(LogFailedError, w.sync)
        self.assertLogHolds(self.reopen(w), make_entries(1, 2, 1))

    def test_segment_bytes_below_a_page_is_refused(self):
        self.assertRaises(ValueError, WriteAheadLog, self.dir, segment_bytes=100)


class SyncCostTests(WALTestMixin, SynchronousTestCase):
    """Group commit: a sync costs one write and one fdatasync, whatever the
    batch size; no change, no system call."""

    def count_syscalls(self):
        calls = {"write": 0, "fdatasync": 0, "fsync_dir": 0}
        real_write, real_fdatasync, real_dir = os.write, wal_log._fdatasync, wal_log._fsync_directory

        def write(fd, data):
            calls["write"] += 1
            return real_write(fd, data)

        def fdatasync(fd):
            calls["fdatasync"] += 1
            return real_fdatasync(fd)

        def fsync_dir(path):
            calls["fsync_dir"] += 1
            return real_dir(path)

        self.patch(os, "write", write)
        self.patch(wal_log, "_fdatasync", fdatasync)
        self.patch(wal_log, "_fsync_directory", fsync_dir)
        return calls

    def test_batch_of_1000_entries_is_one_write_and_one_fdatasync(self):
        w = self.open(segment_bytes=64 << 20)
        calls = self.count_syscalls()
        w.append(make_entries(1, 1000, 1, size=130))
        w.set_hard_state(HardState(1, "a", 0))
        self.assertEqual(calls, {"write": 0, "fdatasync": 0, "fsync_dir": 0})
        w.sync()
        self.assertEqual(calls, {"write": 1, "fdatasync": 1, "fsync_dir": 0})

    def test_sync_without_changes_does_no_io(self):
        w = self.open()
        w.append(make_entries(1, 3, 1))
        w.sync()
        calls = self.count_syscalls()
        w.sync()
        w.set_hard_state(w.hard_state())  # same value: not a change
        w.sync()
        self.assertEqual(calls, {"write": 0, "fdatasync": 0, "fsync_dir": 0})

    def test_hard_state_change_alone_is_synced(self):
        w = self.open()
        calls = self.count_syscalls()
        w.set_hard_state(HardState(2, "b", 0))
        w.sync()
        self.assertEqual(calls["fdatasync"], 1)
        self.assertEqual(self.reopen(w).hard_state(), HardState(2, "b", 0))

    def test_new_segment_file_costs_one_directory_fsync(self):
        w = self.open(segment_bytes=4096)
        w.append(make_entries(1, 20, 1, size=100))
        w.sync()
        calls = self.count_syscalls()
        w.append(make_entries(21, 60, 1, size=100))  # crosses into a new file
        w.sync()
        self.assertEqual(calls["fsync_dir"], 1)
        # The full segment is synced before the new one gets data, then the
        # new one: one fdatasync per file touched.
        self.assertEqual(calls["fdatasync"], 2)


    def test_fsyncs_are_timed_for_stats(self):
        w = self.open()
        real = wal_log._fdatasync

        def slow(fd):
            time.sleep(0.003)
            real(fd)

        self.patch(wal_log, "_fdatasync", slow)
        before = w.stats()["fsyncs"]
        for i in range(1, 4):
            w.append(make_entries(i, i, 1))
            w.sync()
        stats = w.stats()
        self.assertEqual(stats["fsyncs"], before + 3)
        self.assertEqual(len(stats["fsync_recent_seconds"]), before + 3)
        self.assertGreaterEqual(sorted(stats["fsync_recent_seconds"])[-3], 0.003)
        self.assertAlmostEqual(stats["fsync_seconds"], sum(stats["fsync_recent_seconds"]))
        self.assertEqual(stats["fsync_max_seconds"], max(stats["fsync_recent_seconds"]))


class ConflictTruncationTests(WALTestMixin, SynchronousTestCase):
    def test_append_below_last_index_replaces_the_suffix(self):
        w = self.open()
        w.append(make_entries(1, 10, 1))
        w.sync()
        w.append(make_entries(6, 8, 2))
        expected = make_entries(1, 5, 1) + make_entries(6, 8, 2)
        self.assertLogHolds(w, expected)
        w.sync()
        self.assertLogHolds(self.reopen(w), expected)

    def test_truncation_in_the_same_unsynced_batch(self):
        w = self.open()
        w.append(make_entries(1, 10, 1))
        w.append(make_entries(4, 6, 2))
        w.append(make_entries(7, 7, 3))
        w.sync()
        expected = make_entries(1, 3, 1) + make_entries(4, 6, 2) + make_entries(7, 7, 3)
        self.assertLogHolds(self.reopen(w), expected)

    def test_truncation_of_the_whole_log(self):
        w = self.open()
        w.append(make_entries(1, 10, 1))
        w.sync()
        w.append(make_entries(1, 2, 2))
        w.sync()
        self.assertLogHolds(self.reopen(w), make_entries(1, 2, 2))

    def test_truncation_across_segments_survives_reopen(self):
        w = self.open(segment_bytes=4096)
        w.append(make_entries(1, 300, 1, size=60))
        w.sync()
        self.assertGreaterEqual(w.stats()["segments"], 4)
        # Index 20 is in the first segment; the old suffix spans all others.
        w.append(make_entries(20, 25, 2, size=60))
        w.sync()
        expected = make_entries(1, 19, 1, size=60) + make_entries(20, 25, 2, size=60)
        w = self.reopen(w)
        self.assertLogHolds(w, expected)
        # And the log goes on from there, through more truncations.
        w.append(make_entries(26, 200, 2, size=60))
        w.append(make_entries(150, 160, 3, size=60))
        w.sync()
        expected = expected + make_entries(26, 149, 2, size=60) + make_entries(150, 160, 3, size=60)
        w = self.reopen(w)
        self.assertLogHolds(w, expected)

    def test_truncated_segments_are_deleted_by_a_later_compaction(self):
        w = self.open(segment_bytes=4096)
        w.append(make_entries(1, 300, 1, size=60))
        w.sync()
        w.append(make_entries(10, 12, 2, size=60))
        w.sync()
        before = len(segment_files(self.dir))
        w.compact(12, 2)
        w.sync()
        # Every file but the last one holds only entries <= 12 now.
        self.assertEqual(len(segment_files(self.dir)), 1)
        self.assertLess(1, before)
        w = self.reopen(w)
        self.assertLogHolds(w, [], base=(12, 2))
        w.append(make_entries(13, 14, 2, size=60))
        w.sync()
        self.assertLogHolds(self.reopen(w), make_entries(13, 14, 2, size=60), base=(12, 2))


class CompactionTests(WALTestMixin, SynchronousTestCase):
    def test_compaction_keeps_the_term_of_the_compacted_index(self):
        w = self.open()
        w.append(make_entries(1, 10, 1) + make_entries(11, 20, 2))
        w.compact(12, 2)
        self.assertLogHolds(w, make_entries(13, 20, 2), base=(12, 2))
        w.sync()
        self.assertLogHolds(self.reopen(w), make_entries(13, 20, 2), base=(12, 2))

    def test_compaction_removes_segment_files_after_sync(self):
        w = self.open(segment_bytes=4096)
        w.append(make_entries(1, 400, 1, size=80))
        w.sync()
        files = segment_files(self.dir)
        disk = w.stats()["bytes_on_disk"]
        self.assertGreaterEqual(len(files), 6)
        w.compact(300, 1)
        self.assertEqual(segment_files(self.dir), files)  # not before the sync
        w.sync()
        remaining = segment_files(self.dir)
        self.assertLess(len(remaining), len(files))
        self.assertEqual(remaining, files[-len(remaining) :])  # oldest went first
        self.assertLess(w.stats()["bytes_on_disk"], disk)
        self.assertEqual(w.stats()["segments"], len(remaining))
        w = self.reopen(w)
        self.assertLogHolds(w, make_entries(301, 400, 1, size=80), base=(300, 1))

    def test_disk_use_stays_bounded_with_regular_compaction(self):
        w = self.open(segment_bytes=4096)
        index = 0
        for _ in range(60):
            w.append(make_entries(index + 1, index + 20, 1, size=100))
            index += 20
            w.compact(index - 10, 1)
            w.sync()
        self.assertLessEqual(w.stats()["segments"], 3)
        self.assertLessEqual(len(segment_files(self.dir)), 3)
        self.assertLogHolds(self.reopen(w), make_entries(index - 9, index, 1, size=100), base=(index - 10, 1))

    def test_compaction_of_everything(self):
        w = self.open()
        w.append(make_entries(1, 10, 3))
        w.compact(10, 3)
        w.sync()
        w = self.reopen(w)
        self.assertLogHolds(w, [], base=(10, 3))
        w.append(make_entries(11, 11, 3))
        self.assertEqual(w.last_index(), 11)

    def test_compaction_arguments_are_checked(self):
        w = self.open()
        w.append(make_entries(1, 10, 1))
        self.assertRaises(ValueError, w.compact, 11, 1)
        self.assertRaises(ValueError, w.compact, 5, 2)
        w.compact(5, 1)
        w.compact(3, 1)  # already covered: nothing to do
        self.assertEqual(w.first_index(), 6)


class ResetTests(WALTestMixin, SynchronousTestCase):
    def test_reset_drops_the_log_and_starts_after_the_snapshot(self):
        w = self.open(segment_bytes=4096)
        w.append(make_entries(1, 200, 1, size=80))
        w.set_hard_state(HardState(1, "a", 100))
        w.sync()
        w.reset(5000, 7)
        self.assertLogHolds(w, [], base=(5000, 7))
        self.assertRaises(ValueError, w.append, make_entries(201, 201, 1))
        w.append(make_entries(5001, 5003, 7))
        w.sync()
        self.assertEqual(len(segment_files(self.dir)), 1)
        w = self.reopen(w)
        self.assertLogHolds(w, make_entries(5001, 5003, 7), base=(5000, 7))
        self.assertEqual(w.hard_state(), HardState(1, "a", 100))

    def test_reset_then_reopen_without_appending(self):
        w = self.open()
        w.append(make_entries(1, 20, 1))
        w.reset(10, 1)
        w.sync()
        self.assertLogHolds(self.reopen(w), [], base=(10, 1))

    def test_unsynced_reset_is_lost_on_reopen(self):
        w = self.open()
        w.append(make_entries(1, 20, 1))
        w.sync()
        w.reset(100, 2)
        self.assertLogHolds(self.reopen(w), make_entries(1, 20, 1))


class TornTailTests(WALTestMixin, SynchronousTestCase):
    """A write cut short by a crash is cut off on open; it was never synced."""

    def build(self):
        """A synced log whose last record is the ENTRIES record of the
        second batch; returns (segment bytes, start and end of that record)."""
        w = self.open()
        w.append(make_entries(1, 5, 1))
        w.set_hard_state(HardState(1, "a", 3))
        w.sync()
        start = w.stats()["bytes_on_disk"]
        w.append(make_entries(6, 9, 1))
        w.sync()
        end = w.stats()["bytes_on_disk"]
        w.close()
        (name,) = segment_files(self.dir)
        with open(os.path.join(self.dir, name), "rb") as f:
            data = f.read()
        self.assertEqual(len(data), end)
        return name, data, start, end

    def test_open_after_cut_at_every_byte_of_the_last_record(self):
        name, data, start, end = self.build()
        events = self.capture_log()
        for cut in range(start, end):
            directory = os.path.join(self.dir, "cut-%d" % cut)
            os.mkdir(directory)
            path = os.path.join(directory, name)
            with open(path, "wb") as f:
                f.write(data[:cut])
            del events[:]
            w = self.open(directory)
            self.assertLogHolds(w, make_entries(1, 5, 1))
            self.assertEqual(w.hard_state(), HardState(1, "a", 3))
            self.assertEqual(os.path.getsize(path), start)
            if cut > start:
                warnings = self.wal_events(events, "warn")
                self.assertEqual(len(warnings), 1, (cut, warnings))
                self.assertEqual(warnings[0]["offset"], start)
            # The repaired log takes new writes.
            w.append(make_entries(6, 6, 2))
            w.sync()
            self.assertLogHolds(self.reopen(w), make_entries(1, 5, 1) + make_entries(6, 6, 2))
            self.opened[-1].close()
            shutil.rmtree(directory)

    def test_last_record_with_a_bad_checksum_is_a_torn_tail(self):
        name, data, start, end = self.build()
        damaged = bytearray(data)
        damaged[end - 3] ^= 0xFF  # in the payload of the last record
        with open(os.path.join(self.dir, name), "wb") as f:
            f.write(damaged)
        self.assertLogHolds(self.open(), make_entries(1, 5, 1))

    def test_zero_filled_tail_is_a_torn_tail(self):
        name, data, start, end = self.build()
        with open(os.path.join(self.dir, name), "ab") as f:
            f.write(b"\0" * 5000)
        self.assertLogHolds(self.open(), make_entries(1, 9, 1))
        self.assertEqual(os.path.getsize(os.path.join(self.dir, name)), end)

    def test_new_segment_with_a_torn_header_is_deleted(self):
        w = self.open(segment_bytes=4096)
        w.append(make_entries(1, 100, 1, size=100))
        w.sync()
        w.close()
        files = segment_files(self.dir)
        last = os.path.join(self.dir, files[-1])
        with open(last, "rb") as f:
            header = f.read(20)
        # A crash right after the next file was created, mid-header.
        nxt = "%016x.wal" % (int(files[-1][:16], 16) + 1)
        with open(os.path.join(self.dir, nxt), "wb") as f:
            f.write(header[:10])
        events = self.capture_log()
        w = self.open(segment_bytes=4096)
        self.assertEqual(segment_files(self.dir), files)
        self.assertEqual(len(self.wal_events(events, "warn")), 1)
        self.assertLogHolds(w, make_entries(1, 100, 1, size=100))
        w.append(make_entries(101, 150, 1, size=100))
        w.sync()
        self.assertLogHolds(self.reopen(w), make_entries(1, 150, 1, size=100))

    def test_empty_last_segment_file_is_deleted(self):
        w = self.open()
        w.append(make_entries(1, 3, 1))
        w.sync()
        w.close()
        open(os.path.join(self.dir, "%016x.wal" % 2), "wb").close()
        self.assertLogHolds(self.open(), make_entries(1, 3, 1))
        self.assertEqual(segment_files(self.dir), ["%016x.wal" % 1])


class CorruptionTests(WALTestMixin, SynchronousTestCase):
    """Damage a crash cannot explain is an error naming file and offset."""

    def build(self, segment_bytes=1 << 20):
        w = self.open(segment_bytes=segment_bytes)
        for first in range(1, 400, 20):
            w.append(make_entries(first, first + 19, 1, size=50))
            w.sync()
        w.close()
        return segment_files(self.dir)

    def record_offsets(self, path):
        with open(path, "rb") as f:
            data = f.read()
        offsets, offset, view = [], 0, memoryview(data)
        while offset < len(data):
            offsets.append(offset)
            offset = fmt.read_record(data, view, offset)[2]
        return data, offsets

    def flip(self, path, offset):
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0x40]))

    def test_flipped_byte_in_an_old_record_payload(self):
        (name,) = self.build()
        path = os.path.join(self.dir, name)
        data, offsets = self.record_offsets(path)
        target = offsets[5]
        self.flip(path, target + fmt.HEADER_SIZE + 30)
        e = self.assertRaises(CorruptLogError, WriteAheadLog, self.dir)
        self.assertEqual((e.path, e.offset), (path, target))
        self.assertIn("checksum", str(e))
        self.assertIn(path, str(e))
        self.assertIn("offset %d" % target, str(e))
        # Nothing was "repaired": the file is untouched.
        self.assertEqual(os.path.getsize(path), len(data))

    def test_flipped_byte_in_an_old_record_header(self):
        (name,) = self.build()
        path = os.path.join(self.dir, name)
        data, offsets = self.record_offsets(path)
        for field in (0, 4, 6, 9, 13):  # sync word, length, payload crc, header crc
            shutil.copyfile(path, path + ".orig")
            self.flip(path, offsets[3] + field)
            e = self.assertRaises(CorruptLogError, WriteAheadLog, self.dir)
            self.assertEqual(e.offset, offsets[3])
            os.replace(path + ".orig", path)
        self.assertEqual(self.open().last_index(), 400)

    def test_flipped_byte_in_a_full_segment_is_never_a_torn_tail(self):
        files = self.build(segment_bytes=4096)
        self.assertGreater(len(files), 2)
        path = os.path.join(self.dir, files[0])
        data, offsets = self.record_offsets(path)
        self.flip(path, len(data) - 2)  # in the last record of an old file
        e = self.assertRaises(CorruptLogError, WriteAheadLog, self.dir)
        self.assertEqual((e.path, e.offset), (path, offsets[-1]))

    def test_truncated_old_segment_is_an_error(self):
        files = self.build(segment_bytes=4096)
        path = os.path.join(self.dir, files[1])
        os.truncate(path, os.path.getsize(path) - 7)
        e = self.assertRaises(CorruptLogError, WriteAheadLog, self.dir)
        self.assertEqual(e.path, path)

    def test_missing_middle_segment_is_an_error(self):
        files = self.build(segment_bytes=4096)
        os.unlink(os.path.join(self.dir, files[1]))
        e = self.assertRaises(CorruptLogError, WriteAheadLog, self.dir)
        self.assertIn("missing", str(e))

    def test_missing_first_segment_is_an_error(self):
        files = self.build(segment_bytes=4096)
        os.unlink(os.path.join(self.dir, files[0]))
        e = self.assertRaises(CorruptLogError, WriteAheadLog, self.dir)
        self.assertIn("missing", str(e))

    def test_foreign_file_is_an_error(self):
        self.build()
        with open(os.path.join(self.dir, "0000000000000000.wal"), "wb") as f:
            f.write(b"this is not a WAL segment, just some text" * 10)
        self.assertRaises(CorruptLogError, WriteAheadLog, self.dir)
