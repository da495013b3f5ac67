"""The node's listening port, shared by clients and peers.

Peers open their connections with the 8-byte preamble `PEER_PREAMBLE`;
anything else is a client speaking length-prefixed `Request`s.  The preamble
cannot be mistaken for a client frame: read as a length prefix, ``b"GCPE"``
is 1.2 GB, far over any allowed frame.

`ListeningService` binds in ``privilegedStartService`` and turns a bind
failure into one line naming the endpoint and a non-zero exit, instead of a
traceback after start-up.
"""

from twisted.application import service
from twisted.internet import endpoints, protocol
from twisted.python.failure import Failure

from geocachedb.net import set_no_delay  # (also imported from here by node/peers.py)

PEER_PREAMBLE = b"GCPEER1\n"


class PortProtocol(protocol.Protocol):
    """Looks at the first bytes of a connection, then hands the connection
    to the client or the peer protocol."""

    def __init__(self, factory):
        self.factory = factory
        self._buffer = b""
        self._inner = None

    def connectionMade(self):
        set_no_delay(self.transport)

    def dataReceived(self, data):
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        self._buffer += data
        n = len(PEER_PREAMBLE)
        if len(self._buffer) < n and PEER_PREAMBLE.startswith(self._buffer):
            return  # could still be a peer: wait for more
        if self._buffer[:n] == PEER_PREAMBLE and self.factory.peer_factory is not None:
            inner = self.factory.peer_factory.buildProtocol(self.transport.getPeer())
            rest = self._buffer[n:]
        else:
            inner = self.factory.client_factory()
            rest = self._buffer
        self._buffer = b""
        self._inner = inner
        inner.makeConnection(self.transport)
        if rest:
            inner.dataReceived(rest)

    def connectionLost(self, reason):
        if self._inner is not None:
            self._inner.connectionLost(reason)


class PortFactory(protocol.Factory):
    noisy = False  # one log line per connection is too many for a database

    def __init__(self, client_factory, peer_factory=None):
        self.client_factory = client_factory  # a callable returning a protocol
        self.peer_factory = peer_factory

    def buildProtocol(self, addr):
        return PortProtocol(self)


class ListeningService(service.Service):
    """Listen on an endpoint string; fail start-up with one clear line."""

    def __init__(self, description, factory, what, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.description = description
        self.factory = factory
        self.what = what
        self.port = None

    def privilegedStartService(self):
        outcome = []
        try:
            endpoint = endpoints.serverFromString(self._reactor, self.description)
        except (ValueError, TypeError, KeyError) as e:
            raise SystemExit("geocache: bad %s endpoint %r: %s" % (self.what, self.description, e))
        endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise SystemExit("geocache: cannot listen on %s: no answer" % self.description)
        if isinstance(outcome[0], Failure):
            reason = outcome[0].value
            detail = getattr(reason, "socketError", None) or reason
            if hasattr(detail, "strerror") and detail.strerror:
                detail = detail.strerror.lower()
            raise SystemExit(
                "geocache: cannot listen for %s on %s: %s" % (self.what, self.description, detail)
            )
        self.port = outcome[0]
        service.Service.privilegedStartService(self)

    def stopService(self):
        service.Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
