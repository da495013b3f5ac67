"""`WriteAheadLog`: the durable `IRaftLog` of a node — Raft entries and hard
state in segmented, checksummed files with group commit.

Where it sits: the Raft host takes a batch of work from the core, calls
`append` (new entries, possibly replacing a conflicting suffix) and
`set_hard_state`, then `sync` once for the whole batch, and only then sends
the messages that depend on it (DESIGN.md invariant 4).  Followers'
AppendEntries are built from `entries`, which is served from memory.
`compact` follows a snapshot of the state machine; `reset` follows the
install of a snapshot received from the leader.

How it works:

- `append`, `set_hard_state`, `compact` and `reset` only change memory and
  encode records into a buffer; no system call.  `sync` writes the buffer
  with one ``write`` and makes it durable with one ``fdatasync`` (a new
  segment file also costs one ``fsync`` of the directory).  Nothing changed
  since the last sync: no system call at all.
- Records (`geocachedb.wal.format`) go to the last segment file; when it
  would pass ``segment_bytes`` a new one is started.  The old one is synced
  before the new one receives any data, so after a power loss only the last
  file can have a torn tail.
- A follower's conflict truncation is an ``ENTRIES`` record that starts at
  or below the last index: replay drops the old suffix when it meets it, so
  the truncation is durable exactly when the replacing entries are, and it
  works the same whichever segment held the old suffix.
- `compact` writes a ``COMPACT`` record; after the next `sync` has made it
  durable, segment files holding only entries it covers are deleted (oldest
  first, never the file being written).  Every segment starts with the
  compaction point and the hard state, so any prefix can go.
- On open (`geocachedb.wal.replay`) a torn tail of the last segment is cut
  off with one warning: the host only counts as durable what `sync`
  returned for, so a torn record was never acknowledged.  Damage anywhere
  else raises `CorruptLogError` naming the file and offset.
- After an I/O error from write or fsync the log refuses further use
  (`LogFailedError`): after a failed fsync the kernel may have dropped the
  dirty pages, so the only safe way on is to restart and replay from disk.
  The same after an entry that cannot be encoded (memory and buffer would
  disagree).

Memory: every retained entry (from the compaction point to the last index)
is kept in memory as an `Entry`, so `term` and `entries` never touch the
disk.  This is bounded by how often the host compacts after snapshots; a
bounded cache reading older entries back from the files is the next step if
that is not enough.

One process at a time: a ``LOCK`` file in the directory is held with
``flock`` while the log is open; a second opener gets `LogLockedError`.
"""

import fcntl
import os
import time
from collections import deque

from twisted.logger import Logger
from zope.interface import implementer

from geocachedb.interfaces import IRaftLog
from geocachedb.raft.types import HardState
from geocachedb.wal import format as fmt
from geocachedb.wal.replay import CorruptLogError, SegmentInfo, replay, segment_name

__all__ = [
    "WriteAheadLog",
    "CorruptLogError",
    "LogLockedError",
    "LogFailedError",
    "DEFAULT_SEGMENT_BYTES",
]

log = Logger()

DEFAULT_SEGMENT_BYTES = 64 << 20
# The most recent fsync times kept for percentiles in `stats`.
FSYNC_WINDOW = 1024
LOCK_NAME = "LOCK"

# Buffered records are written out (without fsync) past this size, so that a
# host appending a lot between syncs does not hold it all twice in memory.
_FLUSH_BYTES = 8 << 20

_fdatasync = getattr(os, "fdatasync", os.fsync)


class LogLockedError(Exception):
    """Another process (or another open `WriteAheadLog`) holds the log."""


class LogFailedError(Exception):
    """A write or fsync failed earlier; the log must be reopened."""


class _Segment(SegmentInfo):
    """A segment as the writer sees it: what is on disk plus what is buffered."""

    __slots__ = ("pending", "fd", "unsynced", "has_body")

    def __init__(self, seq, path, size=0, max_index=0):
        super().__init__(seq, path, size, max_index)
        self.pending = bytearray()  # encoded records not yet written
        self.fd = None  # open while the segment is the last one or has pending data
        self.unsynced = False  # written since its last fdatasync
        self.has_body = False  # holds something besides its header

    @property
    def disk_size(self):
        return self.size - len(self.pending)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_directory(directory):
    path = os.path.join(directory, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise LogLockedError(
            "the Raft log in %s is already open (lock %s held by pid %s)" % (directory, path, holder)
        ) from None
    except BaseException:
        os.close(fd)
        raise
    # The pid is only for the error message above; the lock is the flock.
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    return fd


@implementer(IRaftLog)
class WriteAheadLog:
    """A durable `IRaftLog` in ``directory`` (created if missing)."""

    def __init__(self, directory, segment_bytes=DEFAULT_SEGMENT_BYTES):
        if segment_bytes < 4096:
            raise ValueError("segment_bytes must be at least 4096")
        self.directory = os.path.abspath(directory)
        self.segment_bytes = segment_bytes
        os.makedirs(self.directory, exist_ok=True)
        self._lock_fd = _lock_directory(self.directory)
        self._closed = False
        self._failed = None
        self._dirty = False  # buffered records exist that sync has not made durable
        self._hard_state_dirty = False
        self._directory_dirty = False  # a segment file was created since the last sync
        self._gc_wanted = False  # compact/reset happened: look for deletable segments
        self._pending_bytes = 0
        self.fsyncs = 0
        self.syncs = 0
        # How long the fsyncs took (seconds): the disk's latency as this log
        # sees it, for the node's `stats` (etcd: wal_fsync_duration_seconds).
        self.fsync_seconds = 0.0
        self.fsync_max_seconds = 0.0
        self.fsync_recent = deque(maxlen=FSYNC_WINDOW)
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    # -- opening ---------------------------------------------------------

    def _open(self):
        state = replay(self.directory)
        if state.torn_segment is not None:
            path, size, reason = state.torn_segment
            log.warn(
                "Raft log: deleting {path} ({size} bytes): {reason}; it was never synced",
                path=path,
                size=size,
                reason=reason,
            )
            os.unlink(path)
            _fsync_directory(self.directory)
        if state.torn_tail is not None:
            path, offset, size, reason = state.torn_tail
            log.warn(
                "Raft log: truncating a torn write at the end of {path}: {dropped} bytes "
                "from offset {offset} ({reason}); it was never synced",
                path=path,
                offset=offset,
                dropped=size - offset,
                reason=reason,
            )
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, offset)
                os.fsync(fd)
            finally:
                os.close(fd)

        self._base_index = state.base_index
        self._base_term = state.base_term
        self._entries = state.entries
        self._hard_state = state.hard_state
        self._segments = []
        for info in state.segments:
            seg = _Segment(info.seq, info.path, info.size, info.max_index)
            seg.has_body = True  # conservative: never roll over an existing file at once
            self._segments.append(seg)
        if self._segments:
            last = self._segments[-1]
            last.fd = os.open(last.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        else:
            # A new log (or one whose only file never got its header synced).
            self._start_segment(1)
            self._dirty = True
            self.sync()

    # -- IRaftLog: reads -------------------------------------------------

    def hard_state(self):
        hs = self._hard_state
        return HardState(hs.term, hs.vote, hs.commit)

    def first_index(self):
        return self._base_index + 1

    def last_index(self):
        return self._base_index + len(self._entries)

    def term(self, index):
        if index == self._base_index:
            return self._base_term
        offset = index - self._base_index - 1
        if 0 <= offset < len(self._entries):
            return self._entries[offset].term
        raise IndexError(
            "index %d is outside the log (%d..%d)" % (index, self._base_index, self.last_index())
        )

    def entries(self, lo, hi, max_bytes=None):
        if lo >= hi:
            return []
        if lo <= self._base_index:
            raise IndexError("entries from %d are compacted (first index %d)" % (lo, self.first_index()))
        if hi > self.last_index() + 1:
            raise IndexError("entries up to %d requested, last index is %d" % (hi - 1, self.last_index()))
        start = lo - self._base_index - 1
        stop = hi - self._base_index - 1
        if max_bytes is None:
            return self._entries[start:stop]
        out = []
        total = 0
        for entry in self._entries[start:stop]:
            total += len(entry.data)
            if out and total > max_bytes:
                break
            out.append(entry)
        return out

    def stats(self):
        return {
            "entries": len(self._entries),
            "bytes_on_disk": sum(s.disk_size for s in self._segments),
            "segments": len(self._segments),
            "first_index": self.first_index(),
            "last_index": self.last_index(),
            "fsyncs": self.fsyncs,
            "syncs": self.syncs,
            "fsync_seconds": self.fsync_seconds,
            "fsync_max_seconds": self.fsync_max_seconds,
            "fsync_recent_seconds": list(self.fsync_recent),
        }

    # -- IRaftLog: writes ------------------------------------------------

    def set_hard_state(self, hard_state):
        self._check_usable()
        if hard_state == self._hard_state:
            return
        self._hard_state = HardState(hard_state.term, hard_state.vote, hard_state.commit)
        self._hard_state_dirty = True
        self._dirty = True

    def append(self, entries):
        self._check_usable()
        if not entries:
            return
        first = entries[0].index
        last = self.last_index()
        if not self._base_index < first <= last + 1:
            raise ValueError(
                "cannot append from index %d to a log holding %d..%d"
                % (first, self.first_index(), last)
            )
        for expected, entry in enumerate(entries, first):
            if entry.index != expected:
                raise ValueError("entry %d follows entry %d" % (entry.index, expected - 1))
        if first <= last:
            # Conflict truncation; replay repeats it when it meets the
            # ENTRIES record below, whichever segment held the old suffix.
            del self._entries[first - self._base_index - 1 :]
            for seg in self._segments:
                if seg.max_index >= first:
                    seg.max_index = first - 1
        self._entries.extend(entries)
        try:
            self._encode_entries(entries)
        except Exception as e:
            # An entry that cannot be encoded (a negative term, a kind above
            # 255, data that is not bytes) leaves memory and the buffer out
            # of step; refuse further use rather than sync half a batch.
            self._failed = e
            raise
        self._dirty = True
        if self._pending_bytes > _FLUSH_BYTES:
            self._guarded(self._flush)

    def compact(self, index, term):
        self._check_usable()
        if index <= self._base_index:
            return
        if index > self.last_index():
            raise ValueError(
                "cannot compact to %d past the last index %d (use reset)" % (index, self.last_index())
            )
        if self.term(index) != term:
            raise ValueError(
                "compaction to (%d, %d) but entry %d has term %d" % (index, term, index, self.term(index))
            )
        # The record first: if it starts a new segment, that segment's
        # header must still carry the old compaction point.
        self._add_record(fmt.encode_index_term(fmt.COMPACT, index, term))
        del self._entries[: index - self._base_index]
        self._base_index, self._base_term = index, term
        self._gc_wanted = True
        self._dirty = True

    def reset(self, index, term):
        self._check_usable()
        self._add_record(fmt.encode_index_term(fmt.RESET, index, term))
        self._entries = []
        self._base_index, self._base_term = index, term
        for seg in self._segments:
            seg.max_index = 0
        # Start a fresh file so that every older one, including the current,
        # can be deleted once this is synced.
        self._start_segment(self._segments[-1].seq + 1)
        self._gc_wanted = True
        self._dirty = True

    def sync(self):
        self._check_usable()
        if not self._dirty:
            return
        self._guarded(self._sync)

    def close(self):
        if self._closed:
            return
        self._closed = True
        for seg in self._segments:
            if seg.fd is not None:
                os.close(seg.fd)
                seg.fd = None
        self._release()

    # -- internals -------------------------------------------------------

    def _check_usable(self):
        if self._closed:
            raise ValueError("the Raft log in %s is closed" % self.directory)
        if self._failed is not None:
            raise LogFailedError(
                "the Raft log in %s failed earlier (%s); restart to recover from disk"
                % (self.directory, self._failed)
            )

    def _guarded(self, operation):
        try:
            operation()
        except OSError as e:
            self._failed = e
            log.failure("Raft log: I/O error in {directory}", directory=self.directory)
            raise

    def _release(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def _start_segment(self, seq):
        seg = _Segment(seq, os.path.join(self.directory, segment_name(seq)))
        self._segments.append(seg)
        self._buffer(seg, fmt.encode_segment_header(seq, self._base_index, self._base_term))
        self._buffer(seg, fmt.encode_hard_state(self._hard_state))
        # The header carries the current hard state, so no separate record is
        # needed for changes made before this point.
        self._hard_state_dirty = False
        return seg

    def _buffer(self, seg, record):
        seg.pending += record
        seg.size += len(record)
        self._pending_bytes += len(record)

    def _add_record(self, record):
        seg = self._segments[-1]
        if seg.has_body and seg.size + len(record) > self.segment_bytes:
            seg = self._start_segment(seg.seq + 1)
        self._buffer(seg, record)
        seg.has_body = True
        return seg

    def _encode_entries(self, entries):
        """Encode ``entries`` as ENTRIES records, one per batch unless it has
        to be split at ``MAX_RECORD_PAYLOAD`` or at a segment boundary."""
        pack = fmt.ENTRY_HEAD.pack
        entry_head = fmt.ENTRY_HEAD.size
        overhead = fmt.HEADER_SIZE + fmt.ENTRIES_HEAD.size
        n = len(entries)
        i = 0
        while i < n:
            seg = self._segments[-1]
            room = min(self.segment_bytes - seg.size - overhead, fmt.MAX_RECORD_PAYLOAD)
            parts = []
            size = 0
            j = i
            while j < n:
                entry = entries[j]
                data = entry.data
                add = entry_head + len(data)
                # An entry bigger than the room still goes into a segment of
                # its own (or a record of its own), never nowhere.
                if size + add > room and (j > i or seg.has_body):
                    break
                parts.append(pack(entry.term, entry.kind, len(data)))
                parts.append(data)
                size += add
                j += 1
            if j == i:
                self._start_segment(seg.seq + 1)
                continue
            self._buffer(seg, fmt.encode_entries(entries[i].index, parts, j - i))
            seg.has_body = True
            seg.max_index = max(seg.max_index, entries[j - 1].index)
            i = j

    def _flush(self):
        """Write every buffered record; sync and close full segments first."""
        if self._hard_state_dirty:
            self._add_record(fmt.encode_hard_state(self._hard_state))
            self._hard_state_dirty = False
        last = self._segments[-1]
        for seg in self._segments:
            if not seg.pending:
                continue
            if seg.fd is None:
                seg.fd = os.open(
                    seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644
                )
                self._directory_dirty = True
            _write_all(seg.fd, seg.pending)
            self._pending_bytes -= len(seg.pending)
            seg.pending = bytearray()
            seg.unsynced = True
            if seg is not last:
                # Durable before the next file gets any data: only the last
                # file may ever have a torn tail.
                self._fdatasync(seg)
                os.close(seg.fd)
                seg.fd = None

    def _fdatasync(self, seg):
        started = time.perf_counter()
        _fdatasync(seg.fd)
        took = time.perf_counter() - started
        self.fsyncs += 1
        self.fsync_seconds += took
        if took > self.fsync_max_seconds:
            self.fsync_max_seconds = took
        self.fsync_recent.append(took)
        seg.unsynced = False

    def _sync(self):
        self._flush()
        last = self._segments[-1]
        if last.unsynced:
            self._fdatasync(last)
        if self._directory_dirty:
            _fsync_directory(self.directory)
            self._directory_dirty = False
        self._dirty = False
        self.syncs += 1
        if self._gc_wanted:
            self._gc_wanted = False
            self._delete_covered_segments()

    def _delete_covered_segments(self):
        """Delete the oldest segments whose live entries are all covered by
        the (now durable) compaction point; oldest first, so that a crash
        part-way leaves a contiguous run of files."""
        deleted = []
        while len(self._segments) > 1 and self._segments[0].max_index <= self._base_index:
            seg = self._segments.pop(0)
            os.unlink(seg.path)
            deleted.append(os.path.basename(seg.path))
        if deleted:
            _fsync_directory(self.directory)
            log.debug(
                "Raft log: deleted {count} segment(s) covered by the compaction point {index}",
                count=len(deleted),
                index=self._base_index,
            )
