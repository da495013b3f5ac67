"""The client side of the wire protocol, independent of any event loop.

`ClientCore` frames requests, matches responses to requests by id (many may
be in flight on one connection) and turns error responses into the
exceptions of `geocachedb.errors`.  It creates and settles futures through a
txaio API object, so the same code yields Deferreds under Twisted
(`txaio.tx.with_config`) and asyncio Futures under asyncio
(`txaio.aio.with_config`).  The Twisted, asyncio and blocking clients are
thin shells around it.
"""

import random
import struct

from geocachedb import errors
from geocachedb.limits import MAX_FRAME_SIZE
from geocachedb.net import parse_address  # noqa: F401  (imported from here by node/peers.py)
from geocachedb.wire import geocache_pb2 as pb

_LENGTH = struct.Struct(">I")


def build_request(kind, key=b"", value=b"", serializable=False, **extra):
    request = pb.Request()
    if kind == "get":
        request.get.key = key
        request.get.serializable = serializable
    elif kind == "put":
        request.put.key = key
        request.put.value = value
    elif kind == "delete":
        request.delete.key = key
    elif kind == "range":
        r = request.range
        r.start = extra.get("start", b"")
        r.end = extra.get("end", b"")
        r.prefix = extra.get("prefix", b"")
        r.limit = extra.get("limit", 0)
        r.serializable = serializable
    elif kind == "status":
        request.status.SetInParent()
    elif kind == "backup":
        request.backup.backup_id = extra.get("backup_id", 0)
    elif kind == "member":
        m = request.member
        m.action = extra.get("action", "list")
        m.node_id = extra.get("node_id", "")
        m.address = extra.get("address", "")
        m.learner = bool(extra.get("learner", False))
    else:
        raise ValueError("unknown request kind %r" % kind)
    return request


def check_bytes(name, value):
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError("%s must be bytes, not %s" % (name, type(value).__name__))


def result_of(kind, response):
    """The user-facing result of a successful response."""
    if kind == "get":
        return response.get.value if response.get.found else None
    if kind == "put":
        return None
    if kind == "delete":
        return response.delete.deleted
    if kind == "range":
        return [(kv.key, kv.value) for kv in response.range.kvs], response.range.more
    if kind == "status":
        s = response.status
        return {
            "id": s.node_id,
            "role": s.role,
            "term": s.term,
            "leader": s.leader_id or None,
            "commit_index": s.commit_index,
            "applied_index": s.applied_index,
        }
    if kind == "backup":
        b = response.backup
        return b.backup_id, b.chunk, b.done, b.index
    if kind == "member":
        return [
            {"id": m.id, "address": m.address, "role": m.role, "is_leader": m.is_leader}
            for m in response.member.members
        ]
    raise ValueError(kind)


class WriteSequencer:
    """Sequence numbers for one client id's writes, and the floor below
    which every write has been answered (sent as ``ack_floor`` so the
    cluster can forget those results)."""

    def __init__(self):
        self._last = 0
        self._open = set()

    def begin(self, request):
        self._last += 1
        request.seq = self._last
        self._open.add(self._last)
        request.ack_floor = min(self._open)
        return self._last

    def end(self, seq):
        self._open.discard(seq)


class ClientCore:
    """Request/response matching for one connection."""

    def __init__(self, api, write, max_frame=MAX_FRAME_SIZE, client_id=None):
        self.api = api  # a txaio framework API object
        self._write = write  # callable(bytes) that sends on the connection
        self.max_frame = max_frame
        self._pending = {}
        self._next_id = 1
        self._buffer = b""
        self.closed_reason = None
        # Exactly-once writes (Raft thesis §6.3): the server remembers the
        # last sequence number of each client id.
        self.client_id = client_id or random.SystemRandom().getrandbits(63) + 1
        self.writes = WriteSequencer()

    def call(self, request):
        """Send ``request`` (a `pb.Request` without id); return a future of
        the `pb.Response`, failed with a GeoCacheError on an error reply."""
        future = self.api.create_future()
        if self.closed_reason is not None:
            self.api.reject(future, errors.Unavailable(self.closed_reason))
            return future
        rid = self._next_id
        self._next_id += 1
        request.id = rid
        data = request.SerializeToString()
        if len(data) > self.max_frame:
            self.api.reject(
                future,
                errors.TooLarge("request of %d bytes exceeds the frame limit of %d" % (len(data), self.max_frame)),
            )
            return future
        self._pending[rid] = future
        self._write(_LENGTH.pack(len(data)) + data)
        return future

    def call_write(self, request):
        """`call` for a write, numbered for exactly-once application."""
        request.client_id = self.client_id
        seq = self.writes.begin(request)
        future = self.call(request)

        def settled(result):
            self.writes.end(seq)
            return result

        self.api.add_callbacks(future, settled, lambda f: settled(f))
        return future

    def data_received(self, data):
        buffer = self._buffer + data if self._buffer else data
        offset = 0
        end = len(buffer)
        while end - offset >= 4:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if length > self.max_frame:
                self.connection_lost("server sent an oversized frame (%d bytes)" % length)
                self._buffer = b""
                return False
            if end - offset - 4 < length:
                break
            start = offset + 4
            offset = start + length
            response = pb.Response.FromString(buffer[start:offset])
            self._deliver(response)
        self._buffer = buffer[offset:]
        return True

    def _deliver(self, response):
        future = self._pending.pop(response.id, None)
        if future is None:
            if response.id == 0 and response.HasField("error"):
                # A connection-level error (the server closes next).
                self.connection_lost(str(errors.from_pb(response.error)))
            return
        if self.api.is_called(future):
            return  # the caller gave up (timeout, cancellation)
        if response.HasField("error") and response.error.code != pb.OK:
            self.api.reject(future, errors.from_pb(response.error))
        else:
            self.api.resolve(future, response)

    def connection_lost(self, reason="connection lost"):
        if self.closed_reason is None:
            self.closed_reason = reason
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not self.api.is_called(future):
                self.api.reject(future, errors.Unavailable(self.closed_reason))
