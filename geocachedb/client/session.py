"""Failover, leader hints and retries: the client logic every flavour shares.

`Session` holds a list of node addresses and one live connection.  A call
goes to the current node; when the connection cannot be made or is lost,
when the node answers UNAVAILABLE, or when it answers NOT_LEADER with the
leader's address, the call moves on (to the leader, else to the next address)
and tries again until its deadline.  Writes carry the session's client id
and a sequence number that stays the same across retries, so the cluster
applies a retried write at most once.

The logic is written once as coroutines that await txaio futures: Twisted
runs them with ``ensureDeferred``, asyncio as tasks.  A flavour supplies
`_open` (make a connection) and `_bounded` (await with a time limit, used
while connecting); an answer's deadline is kept by the connection's
`ClientCore`.
"""

import random
import time

from geocachedb import errors
from geocachedb.client.core import WRITES, KeyValueCalls, WriteSequencer, build_request, check_request, result_of
from geocachedb.net import format_address, parse_address

# What moves a call on to another attempt (TimeoutError: no answer in time).
RETRIED = (errors.NotLeader, errors.Unavailable, TimeoutError)


class Session(KeyValueCalls):
    RETRY_DELAY = 0.05

    def __init__(self, addresses, api, timeout=5.0, max_frame=None):
        if isinstance(addresses, str):
            addresses = [a for a in addresses.split(",") if a]
        if not addresses:
            raise ValueError("at least one address is needed")
        self.addresses = [parse_address(a) for a in addresses]
        self.api = api
        self.timeout = timeout
        self.max_frame = max_frame
        self._current = 0
        self._conn = None
        self._connecting = None
        self.client_id = None
        self._writes = WriteSequencer()
        self.renew_session()
        self._closed = False

    # ------------------------------------------------------ flavour hooks

    def _open(self, host, port):
        """Return an awaitable of a connection object with ``core`` (a
        ClientCore) and ``close()``; fail with errors.Unavailable when it
        cannot be made."""
        raise NotImplementedError

    async def _bounded(self, awaitable, seconds):
        """Await ``awaitable`` for at most ``seconds``; raise TimeoutError."""
        raise NotImplementedError

    # ---------------------------------------------------------- internals

    def _address_label(self, index=None):
        return format_address(*self.addresses[self._current if index is None else index])

    async def _connection(self, remaining):
        if self._conn is not None and self._conn.core.closed_reason is None:
            return self._conn
        self._conn = None
        host, port = self.addresses[self._current]
        conn = await self._bounded(self._open(host, port), remaining)
        self._conn = conn
        return conn

    def _move_on(self, address=None):
        """Drop the current connection; go to ``address`` if it is one of
        ours (a leader hint), else to the next address."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if address:
            try:
                target = parse_address(address)
            except ValueError:
                target = None
            if target in self.addresses:
                self._current = self.addresses.index(target)
                return
            if target is not None:
                # A leader we were not told about: use it too.
                self.addresses.append(target)
                self._current = len(self.addresses) - 1
                return
        self._current = (self._current + 1) % len(self.addresses)

    async def connect(self):
        """Open a connection now instead of at the first call: each address
        is tried once, in order, until one accepts (within the client's
        timeout each); raises errors.Unavailable, naming the last address
        tried and why, when none does."""
        if self._closed:
            raise errors.Unavailable("client is closed")
        last_error = None
        for _ in range(len(self.addresses)):
            try:
                await self._connection(self.timeout)
                return
            except errors.Unavailable as e:
                last_error = e
            except TimeoutError:
                last_error = errors.Unavailable(
                    "cannot connect to %s: no answer within %gs" % (self._address_label(), self.timeout)
                )
            self._move_on()
        raise last_error

    def renew_session(self):
        """Start a new exactly-once session: a new client id and sequence.
        Writes in flight keep the session they were numbered in."""
        self.client_id = random.SystemRandom().getrandbits(63) + 1
        self._writes = WriteSequencer()

    async def call(self, kind, key=b"", value=b"", timeout=None, **extra):
        """Send one request, retrying on another node as needed, for at
        most ``timeout`` seconds (default: the client's); its result.

        A write answered SESSION_EXPIRED on its first attempt (the cluster
        dropped this client's session; the write was not applied) is sent
        again at once under a new session; after a retry the first
        attempt's outcome is unknown and errors.SessionExpired is raised."""
        if self._closed:
            raise errors.Unavailable("client is closed")
        check_request(kind, key, value)
        request = build_request(kind, key, value, **extra)
        if timeout is None:
            timeout = self.timeout
        if kind not in WRITES:
            return await self._send(kind, request, timeout, [0])
        sent = [0]  # attempts that reached a connection
        writes = self._writes
        request.client_id = self.client_id
        # One seq for every attempt: the cluster applies it at most once.
        seq = writes.begin(request)
        try:
            return await self._send(kind, request, timeout, sent)
        except errors.SessionExpired:
            if sent[0] != 1:
                raise
        finally:
            writes.end(seq)
        # Never applied, never sent elsewhere: a new session, and again.
        if self._writes is writes:
            self.renew_session()
        writes = self._writes
        request.client_id = self.client_id
        seq = writes.begin(request)
        try:
            return await self._send(kind, request, timeout, [0])
        finally:
            writes.end(seq)

    async def _send(self, kind, request, timeout, sent):
        conn = self._conn
        if conn is None or conn.core.closed_reason is not None:
            return await self._attempts(kind, request, timeout, time.monotonic() + timeout, 0, None, sent)
        # The usual case, kept to this one coroutine: a single attempt
        # on the open connection, whose core times the answer out (no
        # wait_for, no timer per request).
        deadline = time.monotonic() + timeout
        sent[0] += 1
        try:
            return result_of(kind, await conn.core.call(request, timeout))
        except RETRIED as e:
            last_error = self._after_failure(e, timeout)
        return await self._attempts(kind, request, timeout, deadline, 1, last_error, sent)

    async def _attempts(self, kind, request, timeout, deadline, tried, last_error, sent):
        while True:
            # Every address failed once in a row: wait a little (an
            # election may be under way) before going round again.
            if tried and tried % len(self.addresses) == 0:
                await self.api.sleep(self.RETRY_DELAY)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise last_error or errors.Unavailable("timed out after %.1fs" % timeout)
            tried += 1
            try:
                conn = await self._connection(remaining)
                remaining = deadline - time.monotonic()
                sent[0] += 1
                response = await conn.core.call(request, max(remaining, 0.001))
                return result_of(kind, response)
            except RETRIED as e:
                last_error = self._after_failure(e, timeout)

    def _after_failure(self, error, timeout):
        """Move on after a failed attempt; the error to report if it was
        the last."""
        if isinstance(error, errors.NotLeader):
            self._move_on(error.leader_addr)
            return error
        if isinstance(error, TimeoutError):
            error = errors.Unavailable("no answer from %s within %.1fs" % (self._address_label(), timeout))
        self._move_on()
        return error

    def close(self):
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ----------------------------------------------------- the public API
    #
    # Every call takes ``timeout=`` (seconds, retries and failover included;
    # default: the client's), so no caller needs asyncio.wait_for or
    # Deferred.addTimeout around it.  The plain ones return the coroutine of
    # `call` itself rather than wrapping it in one more.

    # get, put, delete, range, txn, ... and status come from `KeyValueCalls`.
    _call = call

    async def backup(self, write, timeout=None):
        """Pull a consistent backup of the whole key space, calling
        ``write(chunk)`` for each piece of the snapshot stream; returns the
        applied index it was taken at.  All chunks come from one node;
        ``timeout`` bounds each chunk's request."""
        backup_id, chunk, done, index = await self.call("backup", timeout=timeout)
        pinned = self._current
        while True:
            write(chunk)
            if done:
                return index
            if self._current != pinned:
                raise errors.Unavailable("the node serving the backup went away; start it again")
            backup_id, chunk, done, index = await self.call("backup", backup_id=backup_id, timeout=timeout)

    # Maintenance: membership and leadership (run by the leader).
    def members(self, timeout=None):
        return self.call("member", action="list", timeout=timeout)

    def add_member(self, node_id, address, learner=False, timeout=None):
        return self.call("member", action="add", node_id=node_id, address=address, learner=learner,
                         timeout=timeout)

    def promote_member(self, node_id, timeout=None):
        return self.call("member", action="promote", node_id=node_id, timeout=timeout)

    def remove_member(self, node_id, timeout=None):
        return self.call("member", action="remove", node_id=node_id, timeout=timeout)

    def transfer_leader(self, node_id, timeout=None):
        return self.call("member", action="transfer", node_id=node_id, timeout=timeout)
