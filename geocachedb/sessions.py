"""Client sessions: the deduplication table that makes retried writes apply
at most once (Raft thesis, §6.3).

Each client picks a random 64-bit id and numbers its writes (``seq``); with
every write it also says ``ack_floor``: every write below it has been
answered and will never be retried.  The state machine remembers, per
client, the results of the writes at or above the floor; a write whose seq
is below the floor or already remembered is a duplicate and gets the stored
result instead of being applied again.  Pipelined writes may commit out of
order, which is why a set of results is kept rather than only the last seq.

The table is part of the replicated state: each session is one record under
`RESERVED_PREFIX` in the same `IStorage` batch as the data it describes, so
it survives restarts and travels in snapshots.  At most `MAX_SESSIONS`
sessions are kept; beyond that the one unused for the longest (smallest last
applied index — deterministic on every replica) is dropped.  A later write
from a dropped session that says some of its writes were answered
(``ack_floor`` > 1) gets SESSION_EXPIRED instead of being applied: it may be
a retry whose first attempt was applied.  (A dropped session none of whose
writes was answered yet cannot be told from a new one; see
docs/ARCHITECTURE.md.)

A result is the `pb.Response` the write was answered with (no id), so a
retry of any write, a txn included, gets exactly the first answer.
"""

import struct

from geocachedb.commands import response_of
from geocachedb.limits import RESERVED_PREFIX
from geocachedb.wire import geocache_pb2 as pb

SESSION_PREFIX = RESERVED_PREFIX + b"session/"
MAX_SESSIONS = 10000
MAX_RESULTS_PER_SESSION = 4096

_HEAD = struct.Struct(">QQI")  # floor, last_index, count
_V1_RESULT = struct.Struct(">QBQ?")  # seq, kind, index, deleted (before revisions)
_V2 = b"\x02"  # first byte of a v2 record (a v1 record starts with a floor < 2**56)
_RESULT = struct.Struct(">QI")  # seq, length of the encoded Response that follows

_V1_PUT, _V1_DELETE = 1, 2


class ClientSession:
    __slots__ = ("floor", "last_index", "results")

    def __init__(self, floor=0, last_index=0, results=None):
        self.floor = floor
        self.last_index = last_index
        self.results = results if results is not None else {}  # seq -> pb.Response

    def encode(self):
        parts = [_V2, _HEAD.pack(self.floor, self.last_index, len(self.results))]
        for seq in sorted(self.results):
            data = response_of(self.results[seq]).SerializeToString()
            parts.append(_RESULT.pack(seq, len(data)))
            parts.append(data)
        return b"".join(parts)

    @classmethod
    def decode(cls, data):
        if data[:1] != _V2:
            return cls._decode_v1(data)
        floor, last_index, count = _HEAD.unpack_from(data, 1)
        results = {}
        offset = 1 + _HEAD.size
        for _ in range(count):
            seq, length = _RESULT.unpack_from(data, offset)
            offset += _RESULT.size
            results[seq] = pb.Response.FromString(data[offset:offset + length])
            offset += length
        return cls(floor, last_index, results)

    @classmethod
    def _decode_v1(cls, data):
        # Written before revisions existed: the answer had no revision.
        floor, last_index, count = _HEAD.unpack_from(data, 0)
        results = {}
        offset = _HEAD.size
        for _ in range(count):
            seq, kind, index, deleted = _V1_RESULT.unpack_from(data, offset)
            offset += _V1_RESULT.size
            if kind == _V1_PUT:
                results[seq] = pb.Response(put=pb.PutResponse(index=index))
            else:
                results[seq] = pb.Response(
                    delete=pb.DeleteResponse(index=index, deleted=deleted, count=int(deleted)))
        return cls(floor, last_index, results)


def session_key(client_id):
    return SESSION_PREFIX + struct.pack(">Q", client_id)


class SessionTable:
    """The in-memory view of the table, loaded from storage at start."""

    def __init__(self, storage):
        self.sessions = {}
        for key, value in storage.scan(prefix=SESSION_PREFIX):
            (client_id,) = struct.unpack(">Q", key[len(SESSION_PREFIX):])
            self.sessions[client_id] = ClientSession.decode(value)

    def lookup(self, client_id, seq, ack_floor):
        """The stored Response of a duplicate, False when the write is
        new.  None when it cannot be told: a duplicate below the floor
        whose result was forgotten, or a write of a session that is gone
        but had writes answered (``ack_floor`` > 1)."""
        session = self.sessions.get(client_id)
        if session is None:
            return None if ack_floor > 1 else False
        if seq in session.results:
            return session.results[seq]
        if seq < session.floor:
            return None
        return False

    def record(self, client_id, seq, ack_floor, result, index, dirty):
        """Remember ``result`` (its Response) for (client_id, seq); add the session's key
        to ``dirty`` (client ids whose record must be written)."""
        session = self.sessions.get(client_id)
        if session is None:
            session = self.sessions[client_id] = ClientSession()
        session.results[seq] = result
        session.last_index = index
        if ack_floor > session.floor:
            session.floor = ack_floor
            results = session.results
            # Results are inserted in about seq order: the forgotten ones
            # are at the front.  One inserted late (a write that committed
            # out of order) may stay until the cap below trims it; keeping
            # an answer longer is harmless, and every replica does the same.
            stale = []
            for old in results:
                if old >= ack_floor:
                    break
                stale.append(old)
            for old in stale:
                del results[old]
        if len(session.results) > MAX_RESULTS_PER_SESSION:
            for old in sorted(session.results)[: len(session.results) - MAX_RESULTS_PER_SESSION]:
                del session.results[old]
                session.floor = max(session.floor, old + 1)
        dirty.add(client_id)

    def evict(self, dirty, deleted):
        """Drop the least recently used sessions beyond MAX_SESSIONS."""
        excess = len(self.sessions) - MAX_SESSIONS
        if excess <= 0:
            return
        victims = sorted(self.sessions, key=lambda cid: (self.sessions[cid].last_index, cid))[:excess]
        for cid in victims:
            del self.sessions[cid]
            dirty.discard(cid)
            deleted.append(session_key(cid))

    def writes(self, dirty):
        return [(session_key(cid), self.sessions[cid].encode()) for cid in sorted(dirty)]
