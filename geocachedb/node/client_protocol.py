"""The client protocol: length-prefixed `Request`s in, `Response`s out.

A connection parses frames and hands each request to the `KVService`; many
requests may be in flight on one connection, and responses go back in
completion order, matched by request id.  A framing error (oversized frame,
undecodable or empty envelope) gets one `Response` with id 0 and an error,
then the connection closes; other connections are not affected.
"""

from geocachedb import errors
from geocachedb.node.kvservice import error_response
from geocachedb.wire import geocache_pb2 as pb
from geocachedb.wire.framing import EnvelopeReceiver


class ClientConnection(EnvelopeReceiver):
    envelope = pb.Request

    def __init__(self, service, max_frame):
        self.service = service
        self.MAX_LENGTH = max_frame
        self._open = True

    def connectionLost(self, reason):
        self._open = False

    def respond(self, response):
        # A response that completes after the client left is dropped.
        if self._open:
            self.sendString(response.SerializeToString())

    def envelope_received(self, request):
        self.service.handle(request, self.respond)

    def frame_error(self, reason):
        code = errors.TooLarge if "exceeds the limit" in reason else errors.InvalidArgument
        self.respond(error_response(0, code(reason)))
