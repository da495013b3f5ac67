"""Length-prefixed protobuf envelopes over a byte stream.

Every connection in geocachedb — client to node, node to node — carries
frames of a 4-byte big-endian length followed by one serialized envelope.
`EnvelopeReceiver` is Twisted's `Int32StringReceiver` with the traps fixed:
an explicit maximum frame size, one clear log line (peer and length) when it
is exceeded, refusal to send oversized frames, no processing after the
connection started closing, and undecodable or empty envelopes treated as
protocol errors rather than no-ops.
"""

from google.protobuf.message import DecodeError
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

from geocachedb.limits import MAX_FRAME_SIZE
from geocachedb.net import describe_peer


class FrameError(Exception):
    """A frame that cannot be accepted; the connection is closed after it."""


class EnvelopeReceiver(Int32StringReceiver):
    """Base protocol: subclasses set `envelope` (a protobuf message class),
    `body_field` (the name of the envelope's oneof) and implement
    `envelope_received` and, optionally, `frame_error`."""

    log = Logger()
    envelope = None
    body_field = "body"
    MAX_LENGTH = MAX_FRAME_SIZE

    def peer_label(self):
        return describe_peer(self.transport.getPeer() if self.transport else None)

    def lengthLimitExceeded(self, length):
        if self.transport.disconnecting:
            return
        self.log.warn(
            "closing connection from {peer}: frame of {length} bytes exceeds "
            "the limit of {limit} bytes",
            peer=self.peer_label(),
            length=length,
            limit=self.MAX_LENGTH,
        )
        self.frame_error("frame of %d bytes exceeds the limit of %d bytes" % (length, self.MAX_LENGTH))
        self.transport.loseConnection()

    def stringReceived(self, data):
        # Frames still buffered after we decided to close are not processed.
        if self.transport.disconnecting:
            return
        message = self.envelope()
        try:
            message.ParseFromString(data)
        except DecodeError as e:
            return self._reject("undecodable frame (%s)" % e)
        if message.WhichOneof(self.body_field) is None:
            return self._reject("frame with an empty or unknown body")
        self.envelope_received(message)

    def _reject(self, reason):
        # `paused` stops IntNStringReceiver's loop over frames already
        # buffered in this read: nothing more is parsed on this connection.
        self.paused = True
        self.log.warn(
            "closing connection from {peer}: {reason}", peer=self.peer_label(), reason=reason
        )
        self.frame_error(reason)
        self.transport.loseConnection()

    def send_envelope(self, message):
        data = message.SerializeToString()
        if len(data) > self.MAX_LENGTH:
            raise FrameError(
                "refusing to send a frame of %d bytes (limit %d)" % (len(data), self.MAX_LENGTH)
            )
        self.sendString(data)

    def envelope_received(self, message):
        raise NotImplementedError

    def frame_error(self, reason):
        """Called before the connection is closed for a framing error; may
        send one last envelope explaining it."""
