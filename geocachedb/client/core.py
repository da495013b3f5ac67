"""The client side of the wire protocol, independent of any event loop.

`ClientCore` frames requests, matches responses to requests by id (many may
be in flight on one connection), turns error responses into the exceptions
of `geocachedb.errors` and gives up on requests past their deadline.  It
creates and settles futures through a txaio API object, so the same code
yields Deferreds under Twisted (`txaio.tx.with_config`) and asyncio Futures
under asyncio (`txaio.aio.with_config`).  The Twisted, asyncio and blocking
clients are thin shells around it.

Deadlines cost no timer per request: requests sent with the same timeout
expire in the order they were sent, so each timeout value has a FIFO of
(deadline, request id) and one timer per connection waits for the earliest
head.  ``asyncio.wait_for`` per request (a second future, a timer handle and
a callback each) cost more client CPU than the rest of the call.
"""

import random
import struct
import time
from collections import deque

from geocachedb import errors
from geocachedb.limits import MAX_FRAME_SIZE
from geocachedb.net import parse_address  # noqa: F401  (imported from here by node/peers.py)
from geocachedb.client.results import (
    KeyValue, delete_result, kv_or_none, put_result, range_result, txn_result,
)
from geocachedb.client.txn import Txn, delete_request, range_request
from geocachedb.wire import geocache_pb2 as pb

_LENGTH = struct.Struct(">I")


# Calls whose result is another view of a wire request: kind -> wire kind.
VIEWS = {"get_kv": "get", "put_kv": "put", "put_prev": "put", "delete_range": "delete", "range_kvs": "range"}
# The kinds that change the state: numbered for exactly-once retries.
WRITES = frozenset(("put", "put_kv", "put_prev", "delete", "delete_range", "txn", "incr",
                    "put_sequential", "compact"))
# The kinds whose ``key`` (and ``value``) must be bytes.
KEYED = frozenset(("get", "get_kv", "put", "put_kv", "put_prev", "delete", "delete_range", "incr",
                   "put_sequential"))
VALUED = frozenset(("put", "put_kv", "put_prev", "put_sequential"))

_RANGE_OPTIONS = ("revision", "keys_only", "count_only", "min_mod_revision", "max_mod_revision",
                  "min_create_revision", "max_create_revision", "sort_order", "descending")


def build_request(kind, key=b"", value=b"", serializable=False, **extra):
    request = pb.Request()
    kind = VIEWS.get(kind, kind)
    if kind == "get":
        request.get.key = key
        request.get.serializable = serializable
        request.get.revision = extra.get("revision", 0)
    elif kind == "put":
        request.put.key = key
        request.put.value = value
        request.put.prev_kv = bool(extra.get("prev_kv", False))
    elif kind == "delete":
        delete_request(key, extra.get("range_end", b""), extra.get("prefix", b""),
                       extra.get("prev_kv", False), out=request.delete)
    elif kind == "range":
        range_request(extra.get("start", b""), extra.get("end", b""), extra.get("prefix", b""),
                      extra.get("limit", 0), serializable,
                      out=request.range, **{k: extra[k] for k in _RANGE_OPTIONS if k in extra})
    elif kind == "txn":
        txn = extra["txn"]
        if not isinstance(txn, pb.TxnRequest):
            raise TypeError("txn must be a pb.TxnRequest, not %s" % type(txn).__name__)
        request.txn.CopyFrom(txn)
    elif kind == "compact":
        revision = extra.get("revision", 0)
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
            raise ValueError("the revision to compact at must be a positive int, not %r" % (revision,))
        request.compact.revision = revision
    elif kind == "incr":
        delta = extra.get("delta", 1)
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError("delta must be an int, not %s" % type(delta).__name__)
        request.incr.key = key
        request.incr.delta = delta
    elif kind == "put_sequential":
        request.put_sequential.prefix = key
        request.put_sequential.value = value
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


def check_request(kind, key, value):
    """TypeError unless ``key`` (and ``value``) are bytes where ``kind``
    needs them."""
    if kind in KEYED:
        check_bytes("prefix" if kind == "put_sequential" else "key", key)
        if kind in VALUED:
            check_bytes("value", value)


def result_of(kind, response):
    """The user-facing result of a successful response."""
    revision = response.header.revision
    if kind == "get":
        return response.get.value if response.get.found else None
    if kind == "get_kv":
        g = response.get
        if not g.found:
            return None
        if g.HasField("kv"):
            return KeyValue.from_pb(g.kv)
        return KeyValue(b"", g.value)
    if kind == "put":
        return None
    if kind == "put_prev":
        return kv_or_none(response.put, "prev_kv")
    if kind == "put_kv":
        return put_result(response.put, revision)
    if kind == "delete":
        return response.delete.deleted
    if kind == "delete_range":
        return delete_result(response.delete, revision)
    if kind == "range":
        return [(kv.key, kv.value) for kv in response.range.kvs], response.range.more
    if kind == "range_kvs":
        return range_result(response.range, revision)
    if kind == "txn":
        return txn_result(response.txn, revision)
    if kind == "compact":
        return None
    if kind == "incr":
        return response.incr.value
    if kind == "put_sequential":
        return response.put_sequential.key
    if kind == "status":
        s = response.status
        return {
            "id": s.node_id,
            "role": s.role,
            "term": s.term,
            "leader": s.leader_id or None,
            "commit_index": s.commit_index,
            "applied_index": s.applied_index,
            "revision": s.revision,
            "compact_revision": s.compact_revision,
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


class KeyValueCalls:
    """The key-value API of a client, each call one ``_call(kind, key,
    value, timeout=, **extra)`` of the class it is mixed into (a session
    with failover, or one connection).

    ``revision`` (0: now) reads the key space as of that revision: reads
    below the compaction point fail with errors.Compacted, above the
    current revision with errors.FutureRevision."""

    def get(self, key, serializable=False, timeout=None, revision=0):
        """The value, or None."""
        return self._call("get", key, serializable=serializable, revision=revision, timeout=timeout)

    def get_kv(self, key, revision=0, serializable=False, timeout=None):
        """The `KeyValue` (value and metadata), or None."""
        return self._call("get_kv", key, serializable=serializable, revision=revision, timeout=timeout)

    def put(self, key, value, timeout=None, prev_kv=False):
        """None; with ``prev_kv=True`` the `KeyValue` it replaced (None if
        there was none)."""
        return self._call("put_prev" if prev_kv else "put", key, value, prev_kv=prev_kv, timeout=timeout)

    def put_kv(self, key, value, prev_kv=False, timeout=None):
        """`PutResult(revision, prev_kv)`."""
        return self._call("put_kv", key, value, prev_kv=prev_kv, timeout=timeout)

    def delete(self, key, timeout=None):
        """True when the key existed."""
        return self._call("delete", key, timeout=timeout)

    def delete_range(self, key=b"", range_end=b"", prefix=b"", prev_kv=False, timeout=None):
        """Delete one key (range_end empty), every key in [key, range_end)
        (b"\x00": every key >= key) or every key under ``prefix``;
        `DeleteResult(count, prev_kvs, revision)`."""
        return self._call("delete_range", key, range_end=range_end, prefix=prefix, prev_kv=prev_kv,
                          timeout=timeout)

    def range(self, start=b"", end=b"", prefix=b"", limit=0, serializable=False, timeout=None, **options):
        """``([(key, value)], more)``; ``options``: revision, keys_only,
        count_only, min/max_mod_revision, min/max_create_revision,
        sort_order ("ascend"/"descend"), descending."""
        return self._call("range", start=start, end=end, prefix=prefix, limit=limit,
                          serializable=serializable, timeout=timeout, **options)

    def range_kvs(self, start=b"", end=b"", prefix=b"", limit=0, serializable=False, timeout=None, **options):
        """As `range`, but `RangeResult(kvs, more, count, revision)`."""
        return self._call("range_kvs", start=start, end=end, prefix=prefix, limit=limit,
                          serializable=serializable, timeout=timeout, **options)

    def txn(self):
        """A `Txn` builder: ``.when(...).then(...).otherwise(...).commit()``
        gives a `TxnResult(succeeded, responses, revision)`."""
        return Txn(lambda request, timeout: self._call("txn", txn=request, timeout=timeout))

    def incr(self, key, delta=1, timeout=None):
        """Add ``delta`` to the key's decimal integer value (missing: 0); the
        new value (int)."""
        return self._call("incr", key, delta=delta, timeout=timeout)

    def put_sequential(self, prefix, value, timeout=None):
        """Store ``value`` under ``prefix`` + a new zero-padded number; the
        key created (bytes)."""
        return self._call("put_sequential", prefix, value, timeout=timeout)

    def compact(self, revision, timeout=None):
        """Drop the history below ``revision``."""
        return self._call("compact", revision=revision, timeout=timeout)

    def status(self, timeout=None):
        return self._call("status", timeout=timeout)


class WriteSequencer:
    """Sequence numbers for one client id's writes, and the floor below
    which every write has been answered (sent as ``ack_floor`` so the
    cluster can forget those results)."""

    def __init__(self):
        self._last = 0
        self._open = set()
        # The smallest open seq, or _last + 1: seqs are handed out in order,
        # so the floor only moves up and passes each seq once.
        self._floor = 1

    def begin(self, request):
        self._last += 1
        request.seq = self._last
        self._open.add(self._last)
        if self._floor not in self._open:  # nothing was open
            self._floor = self._last
        request.ack_floor = self._floor
        return self._last

    def end(self, seq):
        self._open.discard(seq)
        if seq == self._floor:
            floor, last, open_ = seq + 1, self._last, self._open
            while floor <= last and floor not in open_:
                floor += 1
            self._floor = floor

    @property
    def floor(self):
        return self._floor


class ClientCore:
    """Request/response matching for one connection.

    ``clock`` is the time base of ``api.call_later`` (``loop.time`` under
    asyncio, ``reactor.seconds`` under Twisted); it defaults to
    `time.monotonic`, which is asyncio's.
    """

    def __init__(self, api, write, max_frame=MAX_FRAME_SIZE, client_id=None, clock=None):
        self.api = api  # a txaio framework API object
        self._write = write  # callable(bytes) that sends on the connection
        self.max_frame = max_frame
        self._clock = clock or time.monotonic
        self._pending = {}
        self._next_id = 1
        self._buffer = b""
        self.closed_reason = None
        self._deadlines = {}  # timeout -> deque of (deadline, request id), in send order
        self._timer = None  # the one delayed call, for the earliest deadline
        self._timer_at = None
        # Exactly-once writes (Raft thesis §6.3): the server remembers the
        # last sequence number of each client id.
        self.client_id = client_id or random.SystemRandom().getrandbits(63) + 1
        self.writes = WriteSequencer()

    def call(self, request, timeout=None):
        """Send ``request`` (a `pb.Request` without id); return a future of
        the `pb.Response`, failed with a GeoCacheError on an error reply and
        with TimeoutError when ``timeout`` seconds pass without an answer
        (a late answer is then dropped)."""
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
        if timeout is not None:
            self._expire_after(rid, timeout)
        self._write(_LENGTH.pack(len(data)) + data)
        return future

    def _expire_after(self, rid, timeout):
        deadline = self._clock() + timeout
        queue = self._deadlines.get(timeout)
        if queue is None:
            queue = self._deadlines[timeout] = deque()
        else:
            # Answered requests leave from the head as new ones join at the
            # tail, so a queue stays about as long as what is in flight.
            pending = self._pending
            while queue and queue[0][1] not in pending:
                queue.popleft()
        queue.append((deadline, rid))
        if self._timer_at is None or deadline < self._timer_at:
            self._schedule(deadline)

    def _schedule(self, at):
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.api.call_later(max(at - self._clock(), 0.0), self._expire)

    def _expire(self):
        self._timer = self._timer_at = None
        now = self._clock()
        pending = self._pending
        earliest = None
        for timeout, queue in list(self._deadlines.items()):
            while queue:
                deadline, rid = queue[0]
                future = pending.get(rid)
                if future is not None and deadline > now:
                    break
                queue.popleft()
                if future is not None:
                    del pending[rid]
                    if not self.api.is_called(future):
                        self.api.reject(future, TimeoutError("no answer within %gs" % timeout))
            if queue:
                if earliest is None or queue[0][0] < earliest:
                    earliest = queue[0][0]
            else:
                del self._deadlines[timeout]
        if earliest is not None:
            self._schedule(earliest)

    def call_write(self, request, timeout=None):
        """`call` for a write, numbered for exactly-once application.  A
        write answered SESSION_EXPIRED (it was sent once, so it was not
        applied) is sent again once under a new client id."""
        outer = self.api.create_future()
        self._send_write(request, timeout, outer, False)
        return outer

    def renew_session(self):
        """A new client id and sequence (the old session was dropped by
        the cluster)."""
        self.client_id = random.SystemRandom().getrandbits(63) + 1
        self.writes = WriteSequencer()

    def _send_write(self, request, timeout, outer, renewed):
        writes = self.writes
        request.client_id = self.client_id
        seq = writes.begin(request)
        future = self.call(request, timeout)
        api = self.api

        def answered(response):
            writes.end(seq)
            if not api.is_called(outer):
                api.resolve(outer, response)

        def failed(failure):
            writes.end(seq)
            error = getattr(failure, "value", failure)
            if isinstance(error, errors.SessionExpired) and not renewed:
                if self.writes is writes:
                    self.renew_session()
                self._send_write(request, timeout, outer, True)
            elif not api.is_called(outer):
                api.reject(outer, error)

        api.add_callbacks(future, answered, failed)

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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        self._deadlines.clear()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not self.api.is_called(future):
                self.api.reject(future, errors.Unavailable(self.closed_reason))
