"""Raft messages to and from the wire: `geocachedb.raft.types.Message` <->
protobuf `RaftMessage`, field for field.  Entry data is carried as the bytes
the client's request was encoded into; nothing is re-encoded on the way."""

from geocachedb.raft.types import Entry, Message
from geocachedb.wire import geocache_pb2 as pb


def message_to_pb(msg, out=None, with_entries=True):
    out = out if out is not None else pb.RaftMessage()
    out.type = msg.type
    out.to = msg.to
    out.frm = msg.frm
    out.term = msg.term
    out.log_term = msg.log_term
    out.index = msg.index
    out.commit = msg.commit
    out.reject = msg.reject
    out.reject_hint = msg.reject_hint
    out.hint_term = msg.hint_term
    if msg.context:
        out.context = msg.context
    if msg.snapshot:
        out.snapshot = msg.snapshot
    if msg.entries and with_entries:
        add = out.entries.add
        for e in msg.entries:
            add(index=e.index, term=e.term, kind=e.kind, data=e.data)
    return out


def message_from_pb(m):
    return Message(
        type=m.type,
        to=m.to,
        frm=m.frm,
        term=m.term,
        log_term=m.log_term,
        index=m.index,
        entries=[Entry(e.index, e.term, e.data, e.kind) for e in m.entries],
        commit=m.commit,
        reject=m.reject,
        reject_hint=m.reject_hint,
        hint_term=m.hint_term,
        context=m.context,
        snapshot=m.snapshot,
    )


def varint(n):
    """``n`` (0 <= n < 2**64) as a protobuf base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# PeerMessage.raft and RaftMessage.entries, length-delimited (wire type 2),
# for an AppendEntries assembled from separately encoded parts.
_RAFT_FIELD = varint(pb.PeerMessage.RAFT_FIELD_NUMBER << 3 | 2)
_ENTRIES_FIELD = varint(pb.RaftMessage.ENTRIES_FIELD_NUMBER << 3 | 2)


def entry_field(entry):
    """One entry as an encoded ``RaftMessage.entries`` field: encoded once
    and reused for every follower and message that carries it."""
    body = pb.PeerEntry(index=entry.index, term=entry.term, kind=entry.kind,
                        data=entry.data).SerializeToString()
    return _ENTRIES_FIELD + varint(len(body)) + body


def append_envelope(parts):
    """A `PeerMessage` carrying the RaftMessage made of ``parts`` (its
    header encoded without entries, then `entry_field`s): protobuf parses
    concatenated encodings of a message as one message."""
    raft = b"".join(parts)
    return _RAFT_FIELD + varint(len(raft)) + raft
