"""The Twisted client: Deferreds all the way.

Two levels:

- `GeoCacheClientProtocol` / `GeoCacheClientFactory`: one connection to one
  node, ``get``/``put``/``delete``/``range`` returning Deferreds, many
  requests in flight matched by request id.  For programs that manage their
  own connections.
- `TwistedClient`: a list of node addresses with failover, leader hints and
  exactly-once retries of writes (see `geocachedb.client.session`).
"""

import txaio.tx
from twisted.internet import defer, endpoints, error, protocol

from geocachedb import errors
from geocachedb.client.core import WRITES, ClientCore, KeyValueCalls, build_request, check_request, result_of
from geocachedb.client.txn import Txn
from geocachedb.client.session import Session
from geocachedb.limits import MAX_FRAME_SIZE
from geocachedb.net import format_address, set_no_delay


class GeoCacheClientProtocol(KeyValueCalls, protocol.Protocol):
    """One client connection (see module docstring)."""

    max_frame = MAX_FRAME_SIZE

    def __init__(self, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.core = ClientCore(txaio.tx.with_config(reactor), self._write, self.max_frame, clock=reactor.seconds)
        self.lost = defer.Deferred()

    def _write(self, data):
        self.transport.write(data)

    def connectionMade(self):
        set_no_delay(self.transport)

    def dataReceived(self, data):
        if not self.core.data_received(data):
            self.transport.abortConnection()

    def connectionLost(self, reason=protocol.connectionDone):
        self.core.connection_lost("connection lost: %s" % reason.getErrorMessage())
        if not self.lost.called:
            self.lost.callback(None)

    def close(self):
        if self.transport is not None:
            self.transport.loseConnection()

    def _call(self, kind, key=b"", value=b"", timeout=None, **extra):
        try:
            check_request(kind, key, value)
            request = build_request(kind, key, value, **extra)
        except (TypeError, ValueError) as e:
            return defer.fail(e)
        if kind in WRITES:
            d = self.core.call_write(request, timeout)
        else:
            d = self.core.call(request, timeout)
        return d.addCallback(lambda response: result_of(kind, response))

    # get, put, delete, range, txn, incr, ... and status come from `KeyValueCalls`;
    # ``timeout``: seconds to wait for the answer (default: no limit), then
    # the Deferred fails with TimeoutError.


class GeoCacheClientFactory(protocol.ClientFactory):
    protocol = GeoCacheClientProtocol

    def __init__(self, reactor=None):
        self.reactor = reactor

    def buildProtocol(self, addr):
        p = self.protocol(self.reactor)
        p.factory = self
        return p


def describe_connect_error(host, port, failure):
    reason = failure.value
    if isinstance(reason, error.ConnectionRefusedError):
        text = "connection refused"
    elif isinstance(reason, (error.TimeoutError, defer.TimeoutError)):
        text = "timed out"
    elif isinstance(reason, error.DNSLookupError):
        text = "unknown host"
    else:
        text = reason.__class__.__name__ if not str(reason) else str(reason).strip()
    return errors.Unavailable("cannot connect to %s: %s" % (format_address(host, port), text))


class TwistedClient(Session):
    """A cluster client for Twisted programs; every method returns a
    Deferred."""

    def __init__(self, addresses, reactor=None, timeout=5.0):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        super().__init__(addresses, txaio.tx.with_config(reactor), timeout)

    def _open(self, host, port):
        # An IPv6 literal (parsed from "[::1]:port") needs the TCP6 endpoint.
        make = endpoints.TCP6ClientEndpoint if ":" in host else endpoints.TCP4ClientEndpoint
        endpoint = make(self.reactor, host, port, timeout=max(1, int(self.timeout)))
        d = endpoints.connectProtocol(endpoint, GeoCacheClientProtocol(self.reactor))
        d.addErrback(lambda f: defer.fail(describe_connect_error(host, port, f)))
        return d

    async def _bounded(self, awaitable, seconds):
        d = defer.ensureDeferred(awaitable) if not isinstance(awaitable, defer.Deferred) else awaitable
        d.addTimeout(seconds, self.reactor)
        try:
            return await d
        except defer.TimeoutError:
            raise TimeoutError() from None

    # Session's coroutines as Deferreds; every call takes ``timeout=``.

    def connect(self):
        return defer.ensureDeferred(Session.connect(self))

    def get(self, key, serializable=False, timeout=None, revision=0):
        return defer.ensureDeferred(Session.get(self, key, serializable, timeout, revision))

    def get_kv(self, key, revision=0, serializable=False, timeout=None):
        return defer.ensureDeferred(Session.get_kv(self, key, revision, serializable, timeout))

    def put(self, key, value, timeout=None, prev_kv=False):
        return defer.ensureDeferred(Session.put(self, key, value, timeout, prev_kv))

    def put_kv(self, key, value, prev_kv=False, timeout=None):
        return defer.ensureDeferred(Session.put_kv(self, key, value, prev_kv, timeout))

    def delete(self, key, timeout=None):
        return defer.ensureDeferred(Session.delete(self, key, timeout))

    def delete_range(self, key=b"", range_end=b"", prefix=b"", prev_kv=False, timeout=None):
        return defer.ensureDeferred(Session.delete_range(self, key, range_end, prefix, prev_kv, timeout))

    def range(self, start=b"", end=b"", prefix=b"", limit=0, serializable=False, timeout=None, **options):
        return defer.ensureDeferred(Session.range(self, start, end, prefix, limit, serializable, timeout, **options))

    def range_kvs(self, start=b"", end=b"", prefix=b"", limit=0, serializable=False, timeout=None, **options):
        return defer.ensureDeferred(
            Session.range_kvs(self, start, end, prefix, limit, serializable, timeout, **options))

    def txn(self):
        return Txn(lambda request, timeout: defer.ensureDeferred(
            Session.call(self, "txn", txn=request, timeout=timeout)))

    def incr(self, key, delta=1, timeout=None):
        return defer.ensureDeferred(Session.incr(self, key, delta, timeout))

    def put_sequential(self, prefix, value, timeout=None):
        return defer.ensureDeferred(Session.put_sequential(self, prefix, value, timeout))

    def compact(self, revision, timeout=None):
        return defer.ensureDeferred(Session.compact(self, revision, timeout))

    def status(self, timeout=None):
        return defer.ensureDeferred(Session.status(self, timeout))

    def backup(self, write, timeout=None):
        return defer.ensureDeferred(Session.backup(self, write, timeout))

    def members(self, timeout=None):
        return defer.ensureDeferred(Session.members(self, timeout))

    def add_member(self, node_id, address, learner=False, timeout=None):
        return defer.ensureDeferred(Session.add_member(self, node_id, address, learner, timeout))

    def promote_member(self, node_id, timeout=None):
        return defer.ensureDeferred(Session.promote_member(self, node_id, timeout))

    def remove_member(self, node_id, timeout=None):
        return defer.ensureDeferred(Session.remove_member(self, node_id, timeout))

    def transfer_leader(self, node_id, timeout=None):
        return defer.ensureDeferred(Session.transfer_leader(self, node_id, timeout))
