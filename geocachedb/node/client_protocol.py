"""The client protocol: length-prefixed `Request`s in, `Response`s out.

A connection parses frames and hands each request to the server's
request handler (`geocachedb.server.requests`); many
requests may be in flight on one connection, and responses go back in
completion order, matched by request id.  A framing error (oversized frame,
undecodable or empty envelope) gets one `Response` with id 0 and an error,
then the connection closes; other connections are not affected.
"""

from geocachedb import errors
from geocachedb.server.requests import error_response
from geocachedb.wire import geocache_pb2 as pb
from geocachedb.wire.framing import EnvelopeReceiver


MAX_IN_FLIGHT = 4096


class ClientConnection(EnvelopeReceiver):
    """Back-pressure instead of queues: the connection stops reading (and
    stops parsing frames it has already read) while the client is not
    reading its responses, or while `MAX_IN_FLIGHT` of its requests are
    pending, and resumes when that clears.  Pausing uses
    IntNStringReceiver's own pause support, which also halts its loop over
    buffered frames."""

    envelope = pb.Request

    def __init__(self, node, max_frame):
        self.node = node  # the started `Node`: its ``handle`` runs a request
        self.MAX_LENGTH = max_frame
        self._open = True
        self._in_flight = 0
        self._writes_blocked = False

    def connectionMade(self):
        # The transport calls our pause/resume when its write buffer fills.
        self.transport.registerProducer(_ResponseBuffer(self), True)

    def connectionLost(self, reason):
        self._open = False

    def update_reading(self, writes_blocked=None):
        if writes_blocked is not None:
            self._writes_blocked = writes_blocked
        pause = self._writes_blocked or self._in_flight >= MAX_IN_FLIGHT
        if not self._open or self.transport.disconnecting:
            return
        if pause and not self.paused:
            self.pauseProducing()
        elif not pause and self.paused:
            self.resumeProducing()

    def respond(self, response):
        self._in_flight -= 1
        # A response that completes after the client left is dropped.
        if self._open:
            self.sendString(response.SerializeToString())
            if self.paused and not self._writes_blocked:
                self.update_reading()

    def envelope_received(self, request):
        self._in_flight += 1
        if self._in_flight >= MAX_IN_FLIGHT:
            self.update_reading()
        self.node.handle(request, self.respond)

    def frame_error(self, reason):
        self._in_flight += 1  # respond() counts it back
        code = errors.TooLarge if "exceeds the limit" in reason else errors.InvalidArgument
        self.respond(error_response(0, code(reason)))


class _ResponseBuffer:
    """The IPushProducer the transport sees: it reports a full (or drained)
    write buffer to the connection."""

    def __init__(self, connection):
        self.connection = connection

    def pauseProducing(self):
        self.connection.update_reading(writes_blocked=True)

    def resumeProducing(self):
        self.connection.update_reading(writes_blocked=False)

    def stopProducing(self):
        pass
