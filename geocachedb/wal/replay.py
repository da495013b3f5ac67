"""Rebuild the Raft log's state from the segment files, read-only.

`WriteAheadLog` calls `replay` once when it opens a directory; the result
is the in-memory state the log serves from (entries, compaction point, hard
state, which segment holds which indexes) plus what must be repaired before
writing resumes: a torn tail to cut off, or a last file to delete whose
very first record was never finished.  Replay itself changes nothing on disk.

Replay reads the records of every segment in order and applies them like
the writer did (see `geocachedb.wal.format` for their meaning).  Older
segments may have been deleted by compaction, so the first segment may
begin with entries whose predecessors are gone; that gap is legitimate only
if a later ``COMPACT`` or ``RESET`` covers it, which is checked at the end.
"""

import os
import re

from geocachedb.raft.types import Entry, HardState
from geocachedb.wal import format as fmt

SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})\.wal$")


def segment_name(seq):
    return "%016x.wal" % seq


class CorruptLogError(Exception):
    """The log on disk is damaged somewhere a crash cannot explain.

    ``path`` and ``offset`` say where; nothing is repaired automatically,
    because dropping data from the middle of a Raft log could lose
    acknowledged writes.
    """

    def __init__(self, path, offset, reason):
        super().__init__("%s at offset %d: %s" % (path, offset, reason))
        self.path = path
        self.offset = offset
        self.reason = reason


class SegmentInfo:
    """What the writer needs to know about one existing segment file."""

    __slots__ = ("seq", "path", "size", "max_index")

    def __init__(self, seq, path, size=0, max_index=0):
        self.seq = seq
        self.path = path
        self.size = size
        # The highest index whose live copy is in this file (0: none).  A
        # segment can be deleted once this is covered by the compaction
        # point; truncations lower it, so it is an upper bound.
        self.max_index = max_index


class ReplayResult:
    def __init__(self):
        self.base_index = 0
        self.base_term = 0
        self.entries = []
        self.hard_state = HardState()
        self.segments = []  # SegmentInfo, oldest first
        # Repairs for the caller, with a reason to log:
        self.torn_tail = None  # (path, offset, file size, reason)
        self.torn_segment = None  # (path, file size, reason): delete it


def list_segments(directory):
    """``[(seq, path)]`` of the segment files, oldest first."""
    found = []
    for name in os.listdir(directory):
        match = SEGMENT_NAME.match(name)
        if match:
            found.append((int(match.group(1), 16), os.path.join(directory, name)))
    found.sort()
    return found


class _Replayer:
    def __init__(self):
        self.result = ReplayResult()
        # Index of entries[0]; None until the first entry or reset is seen,
        # because the entries before it may be in deleted segments.
        self.start = None

    def header(self, path, offset, payload, seq, is_first):
        file_seq, base_index, base_term = fmt.decode_segment_header(payload)
        r = self.result
        if file_seq != seq:
            raise fmt.RecordError("header says segment %d, file name says %d" % (file_seq, seq))
        if is_first:
            r.base_index, r.base_term = base_index, base_term
        elif (base_index, base_term) != (r.base_index, r.base_term):
            raise fmt.RecordError(
                "segment starts after (%d, %d) but the log before it ends at (%d, %d)"
                % (base_index, base_term, r.base_index, r.base_term)
            )

    def entries(self, payload, seg):
        r = self.result
        first, new = fmt.decode_entries(payload, Entry)
        if not new:
            return
        if first <= r.base_index:
            raise fmt.RecordError(
                "entries from %d at or below the compaction point %d" % (first, r.base_index)
            )
        if self.start is None:
            self.start, r.entries = first, new
        else:
            last = self.start + len(r.entries) - 1
            if first > last + 1:
                raise fmt.RecordError("entries from %d leave a gap after %d" % (first, last))
            if first <= last:
                # A conflict truncation: the old suffix is replaced.
                for s in r.segments:
                    if s.max_index >= first:
                        s.max_index = first - 1
            if first < self.start:
                self.start, r.entries = first, new
            else:
                del r.entries[first - self.start :]
                r.entries.extend(new)
        seg.max_index = max(seg.max_index, first + len(new) - 1)

    def compact(self, payload):
        r = self.result
        index, term = fmt.decode_index_term(payload)
        if index < r.base_index:
            raise fmt.RecordError(
                "compaction to %d is behind the compaction point %d" % (index, r.base_index)
            )
        if self.start is not None:
            last = self.start + len(r.entries) - 1
            if self.start <= index <= last and r.entries[index - self.start].term != term:
                raise fmt.RecordError("compaction to (%d, %d) disagrees with the log" % (index, term))
            if index >= last:
                r.entries, self.start = [], index + 1
            elif index >= self.start:
                del r.entries[: index + 1 - self.start]
                self.start = index + 1
        r.base_index, r.base_term = index, term

    def reset(self, payload):
        r = self.result
        r.base_index, r.base_term = fmt.decode_index_term(payload)
        r.entries, self.start = [], r.base_index + 1
        for s in r.segments:
            s.max_index = 0

    def hard_state(self, payload):
        term, vote, commit = fmt.decode_hard_state(payload)
        self.result.hard_state = HardState(term, vote, commit)

    def segment(self, seq, path, is_first, is_last):
        with open(path, "rb") as f:
            data = f.read()
        view = memoryview(data)
        seg = SegmentInfo(seq, path, len(data))
        self.result.segments.append(seg)
        offset = 0
        while offset < len(data):
            rtype, payload, end, reason = fmt.read_record(data, view, offset)
            if rtype is None:
                if is_last and fmt.is_torn_tail(data, view, offset, reason):
                    break
                raise CorruptLogError(path, offset, reason)
            try:
                if offset == 0:
                    if rtype != fmt.SEGMENT:
                        raise fmt.RecordError("file does not start with a segment header")
                    self.header(path, offset, payload, seq, is_first)
                elif rtype == fmt.ENTRIES:
                    self.entries(payload, seg)
                elif rtype == fmt.HARD_STATE:
                    self.hard_state(payload)
                elif rtype == fmt.COMPACT:
                    self.compact(payload)
                elif rtype == fmt.RESET:
                    self.reset(payload)
                else:
                    raise fmt.RecordError("unknown record type %d" % rtype)
            except fmt.RecordError as e:
                raise CorruptLogError(path, offset, str(e)) from None
            offset = end
        if offset == 0:
            # Not even the segment header survived: the file was being
            # created when the process died, so nothing in it was synced.
            self.result.segments.pop()
            self.result.torn_segment = (path, len(data), "empty or torn segment header")
        elif offset < len(data):
            seg.size = offset
            self.result.torn_tail = (path, offset, len(data), reason)

    def finish(self, first_path):
        r = self.result
        if self.start is None:
            self.start = r.base_index + 1
        elif self.start != r.base_index + 1:
            raise CorruptLogError(
                first_path,
                0,
                "entries %d..%d are missing (compaction point %d; was a segment deleted?)"
                % (r.base_index + 1, self.start - 1, r.base_index),
            )
        return r


def replay(directory):
    """Read every segment of ``directory``; raise `CorruptLogError` on damage
    that is not a torn tail of the last segment."""
    found = list_segments(directory)
    replayer = _Replayer()
    for k, (seq, path) in enumerate(found):
        if k and seq != found[k - 1][0] + 1:
            raise CorruptLogError(path, 0, "segment %s is missing" % segment_name(found[k - 1][0] + 1))
        replayer.segment(seq, path, is_first=(k == 0), is_last=(k == len(found) - 1))
    return replayer.finish(found[0][1] if found else directory)
