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
applied index — deterministic on every replica) is dropped, and a retry from
that client could then apply twice.
"""

import struct

from geocachedb.limits import RESERVED_PREFIX

SESSION_PREFIX = RESERVED_PREFIX + b"session/"
MAX_SESSIONS = 10000
MAX_RESULTS_PER_SESSION = 4096

_HEAD = struct.Struct(">QQI")  # floor, last_index, count
_RESULT = struct.Struct(">QBQ?")  # seq, kind, index, deleted

PUT, DELETE = 1, 2


class ClientSession:
    __slots__ = ("floor", "last_index", "results")

    def __init__(self, floor=0, last_index=0, results=None):
        self.floor = floor
        self.last_index = last_index
        self.results = results if results is not None else {}  # seq -> (kind, index, deleted)

    def encode(self):
        parts = [_HEAD.pack(self.floor, self.last_index, len(self.results))]
        for seq in sorted(self.results):
            kind, index, deleted = self.results[seq]
            parts.append(_RESULT.pack(seq, kind, index, deleted))
        return b"".join(parts)

    @classmethod
    def decode(cls, data):
        floor, last_index, count = _HEAD.unpack_from(data, 0)
        results = {}
        offset = _HEAD.size
        for _ in range(count):
            seq, kind, index, deleted = _RESULT.unpack_from(data, offset)
            offset += _RESULT.size
            results[seq] = (kind, index, deleted)
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

    def lookup(self, client_id, seq):
        """The stored (kind, index, deleted) of a duplicate, False when
        the write is new.  A duplicate below the floor whose result was
        forgotten gives None."""
        session = self.sessions.get(client_id)
        if session is None:
            return False
        if seq in session.results:
            return session.results[seq]
        if seq < session.floor:
            return None
        return False

    def record(self, client_id, seq, ack_floor, result, index, dirty):
        """Remember ``result`` for (client_id, seq); add the session's key
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
