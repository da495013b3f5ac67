"""Encoded `Command`s (the replicated client writes) touched as bytes: a
forwarded write gets its unique ``proposal_id`` appended without decoding
and re-encoding the command (protobuf merges concatenated encodings)."""

from geocachedb.wire import geocache_pb2 as pb
from geocachedb.wire.raft_codec import varint

_PROPOSAL_ID_TAG = varint(pb.Command.PROPOSAL_ID_FIELD_NUMBER << 3)  # wire type 0: varint
_U64 = (1 << 64) - 1


def with_proposal_id(data, proposal_id):
    """``data`` (an encoded Command) with ``proposal_id`` set."""
    return data + _PROPOSAL_ID_TAG + varint(proposal_id & _U64)


def without_proposal_id(data):
    """The Command ``data`` with its proposal_id cleared (for comparing a
    client's write with the entry a forwarded copy of it became)."""
    cmd = pb.Command.FromString(data)
    cmd.proposal_id = 0
    return cmd
