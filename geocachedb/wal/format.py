"""The on-disk record format of the write-ahead log, and nothing else.

`geocachedb.wal.log` turns Raft writes into records with the ``encode_*``
functions and `replay` turns a segment file back into records with
`read_record`; neither knows the other's in-memory state.  Little-endian
throughout, encoded with `struct`, checksummed with `zlib.crc32`.

A segment file is a sequence of records::

    offset  size  field
    0       2     sync word 0xC3A7 (lets recovery find the next record)
    2       1     record type
    3       1     zero
    4       4     payload length
    8       4     crc32 of the payload
    12      4     crc32 of bytes 0..12 (the header above)
    16      n     payload

The header has its own checksum so that a damaged record whose *length* is
still trustworthy can be told apart from one whose length is garbage: with a
valid header the next record starts right after the payload, so damage in
the middle of the log is found and reported instead of being mistaken for a
torn tail.

Record types and payloads:

``SEGMENT``     first record of every file: magic, format version, the
                segment's sequence number, the compaction point (index, term)
                at the moment the segment was started.  Always followed by a
                ``HARD_STATE`` record, so that any prefix of older segments
                can be deleted without losing the hard state or the
                compaction point.
``HARD_STATE``  term, commit, vote.  The last one in the stream wins.
``ENTRIES``     first index, count, then per entry term, kind, data length,
                data.  One record per `append` call (split at 1 MiB and at
                segment boundaries): one checksum per batch, not per entry.
                An ``ENTRIES`` record whose first index is not past the last
                entry replaces everything from that index on: that is how a
                follower's conflict truncation is made durable, in the same
                write as the entries that replace the old suffix.
``COMPACT``     (index, term): entries up to ``index`` are covered by a
                snapshot.  Segment files are deleted only after this record
                is synced.
``RESET``       (index, term): the whole log is dropped (snapshot install).
"""

import struct
import zlib

SYNC_WORD = 0xC3A7
FORMAT_VERSION = 1
SEGMENT_MAGIC = b"GCDBWAL\n"

SEGMENT = 1
HARD_STATE = 2
ENTRIES = 3
COMPACT = 4
RESET = 5

RECORD_NAMES = {
    SEGMENT: "segment header",
    HARD_STATE: "hard state",
    ENTRIES: "entries",
    COMPACT: "compaction",
    RESET: "reset",
}

_HEAD = struct.Struct("<HBxII")  # sync word, type, pad, length, payload crc
_HEAD_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _HEAD_CRC.size  # 16
_SYNC_BYTES = struct.pack("<H", SYNC_WORD)

_SEGMENT = struct.Struct("<8sIQQQ")  # magic, version, seq, base index, base term
_HARD_STATE = struct.Struct("<QQB")  # term, commit, has vote (+ vote as utf-8)
_INDEX_TERM = struct.Struct("<QQ")  # COMPACT and RESET
ENTRIES_HEAD = struct.Struct("<QI")  # first index, count
ENTRY_HEAD = struct.Struct("<QBI")  # term, kind, data length (+ data)

# A record is split before its payload passes this, so that one bad sector
# costs at most one batch and recovery never has to checksum huge buffers.
MAX_RECORD_PAYLOAD = 1 << 20


class RecordError(ValueError):
    """A record that checksums correctly but does not make sense."""


def encode_record(rtype, payload):
    head = _HEAD.pack(SYNC_WORD, rtype, len(payload), zlib.crc32(payload))
    return head + _HEAD_CRC.pack(zlib.crc32(head)) + payload


def encode_segment_header(seq, base_index, base_term):
    return encode_record(
        SEGMENT, _SEGMENT.pack(SEGMENT_MAGIC, FORMAT_VERSION, seq, base_index, base_term)
    )


def encode_hard_state(hard_state):
    vote = hard_state.vote
    payload = _HARD_STATE.pack(hard_state.term, hard_state.commit, vote is not None)
    if vote is not None:
        payload += vote.encode("utf-8")
    return encode_record(HARD_STATE, payload)


def encode_index_term(rtype, index, term):
    return encode_record(rtype, _INDEX_TERM.pack(index, term))


def encode_entries(first_index, parts, count):
    """``parts`` alternates `ENTRY_HEAD` packs and data, built by the caller
    while it decides where to split (see `WriteAheadLog._encode_entries`)."""
    return encode_record(ENTRIES, ENTRIES_HEAD.pack(first_index, count) + b"".join(parts))


def read_record(data, view, offset):
    """Check the record at ``offset`` of a segment's bytes.

    Returns ``(rtype, payload, end, None)`` for a good record (``payload`` a
    memoryview slice of ``view``) or ``(None, None, None, reason)``.
    """
    size = len(data)
    if size - offset < HEADER_SIZE:
        return None, None, None, "incomplete record header (%d bytes)" % (size - offset)
    sync, rtype, length, payload_crc = _HEAD.unpack_from(data, offset)
    (head_crc,) = _HEAD_CRC.unpack_from(data, offset + _HEAD.size)
    if sync != SYNC_WORD or zlib.crc32(view[offset : offset + _HEAD.size]) != head_crc:
        return None, None, None, "bad record header"
    start = offset + HEADER_SIZE
    end = start + length
    if end > size:
        return None, None, None, "%s record cut short (%d of %d bytes)" % (
            RECORD_NAMES.get(rtype, "unknown"),
            size - start,
            length,
        )
    payload = view[start:end]
    if zlib.crc32(payload) != payload_crc:
        return None, None, None, "checksum mismatch in %s record" % RECORD_NAMES.get(
            rtype, "unknown"
        )
    return rtype, payload, end, None


def find_good_record(data, view, start):
    """Offset of the first fully valid record at or after ``start``, or None.

    Only used on the recovery path after a bad record: the sync word makes
    the search jump between candidates instead of checksumming at every
    byte offset.
    """
    pos = start
    while True:
        pos = data.find(_SYNC_BYTES, pos)
        if pos < 0:
            return None
        if read_record(data, view, pos)[0] is not None:
            return pos
        pos += 1


def is_torn_tail(data, view, offset, reason):
    """Whether the bad record at ``offset`` can only be an unfinished write.

    True when nothing valid follows it: either the header is incomplete or
    the payload runs past the end of the file (a write that did not finish),
    or the rest of the file is zeros (blocks allocated but never written), or
    no good record can be found after it (the damaged bytes are the last
    thing in the file).  Anything else is damage in the middle of the log.
    """
    if reason.startswith("incomplete") or "cut short" in reason:
        return True
    if not data[offset:].strip(b"\0"):
        return True
    return find_good_record(data, view, offset + 1) is None


def decode_segment_header(payload):
    if len(payload) != _SEGMENT.size:
        raise RecordError("segment header of %d bytes" % len(payload))
    magic, version, seq, base_index, base_term = _SEGMENT.unpack(payload)
    if magic != SEGMENT_MAGIC:
        raise RecordError("not a geocachedb WAL segment (magic %r)" % magic)
    if version != FORMAT_VERSION:
        raise RecordError("unsupported WAL format version %d" % version)
    return seq, base_index, base_term


def decode_hard_state(payload):
    """Returns ``(term, vote, commit)``."""
    if len(payload) < _HARD_STATE.size:
        raise RecordError("hard state record of %d bytes" % len(payload))
    term, commit, has_vote = _HARD_STATE.unpack_from(payload, 0)
    vote = None
    if has_vote:
        vote = bytes(payload[_HARD_STATE.size :]).decode("utf-8")
    elif len(payload) != _HARD_STATE.size:
        raise RecordError("hard state record with trailing bytes")
    return term, vote, commit


def decode_index_term(payload):
    if len(payload) != _INDEX_TERM.size:
        raise RecordError("index/term record of %d bytes" % len(payload))
    return _INDEX_TERM.unpack(payload)


def decode_entries(payload, make_entry):
    """Returns ``(first_index, [entries])``; ``make_entry(index, term, data,
    kind)`` builds each one (the Raft `Entry` class in practice)."""
    if len(payload) < ENTRIES_HEAD.size:
        raise RecordError("entries record of %d bytes" % len(payload))
    first, count = ENTRIES_HEAD.unpack_from(payload, 0)
    pos = ENTRIES_HEAD.size
    end = len(payload)
    head_size = ENTRY_HEAD.size
    unpack = ENTRY_HEAD.unpack_from
    out = []
    for index in range(first, first + count):
        if pos + head_size > end:
            raise RecordError("entries record shorter than its count")
        term, kind, length = unpack(payload, pos)
        pos += head_size
        if pos + length > end:
            raise RecordError("entry %d runs past its record" % index)
        out.append(make_entry(index, term, bytes(payload[pos : pos + length]), kind))
        pos += length
    if pos != end:
        raise RecordError("entries record with %d trailing bytes" % (end - pos))
    return first, out
