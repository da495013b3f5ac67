"""The wire format: the committed generated code matches proto/, and the
framing refuses what it must."""

import os
import subprocess
import sys

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from geocachedb.raft.types import Entry, Message
from geocachedb.wire import geocache_pb2 as pb
from geocachedb.wire.framing import EnvelopeReceiver, FrameError
from geocachedb.wire.raft_codec import message_from_pb, message_to_pb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class GeneratedCodeTests(SynchronousTestCase):
    def test_generated_code_is_not_stale(self):
        try:
            import grpc_tools  # noqa: F401
        except ImportError:
            self.skipTest("grpcio-tools is not installed (pip install -e '.[test]')")
        out = self.mktemp()
        os.makedirs(out)
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(ROOT, "proto"),
             "--python_out", out, "--pyi_out", out, os.path.join(ROOT, "proto", "geocache.proto")],
            check=True,
        )
        for name in ("geocache_pb2.py", "geocache_pb2.pyi"):
            with open(os.path.join(out, name)) as fresh, open(os.path.join(ROOT, "geocachedb", "wire", name)) as committed:
                self.assertEqual(
                    fresh.read(), committed.read(), "%s is stale: run `make proto` and commit it" % name
                )


class Recorder(EnvelopeReceiver):
    envelope = pb.Request
    MAX_LENGTH = 1000

    def __init__(self):
        self.received = []
        self.errors = []

    def envelope_received(self, message):
        self.received.append(message)

    def frame_error(self, reason):
        self.errors.append(reason)


def frame(data):
    return len(data).to_bytes(4, "big") + data


class FramingTests(SynchronousTestCase):
    def setUp(self):
        self.proto = Recorder()
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def test_valid_frames_in_small_pieces(self):
        data = b"".join(frame(pb.Request(id=i, get=pb.GetRequest(key=b"k")).SerializeToString()) for i in range(1, 4))
        for i in range(len(data)):
            self.proto.dataReceived(data[i : i + 1])
        self.assertEqual([r.id for r in self.proto.received], [1, 2, 3])
        self.assertFalse(self.transport.disconnecting)

    def test_oversized_length_prefix_closes_without_reading_it(self):
        self.proto.dataReceived((2**31).to_bytes(4, "big") + b"x" * 10)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.proto.received, [])
        self.assertIn("exceeds the limit", self.proto.errors[0])

    def test_garbage_is_a_protocol_error(self):
        self.proto.dataReceived(frame(b"\xff\xff\xff\xff\xff"))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.proto.errors), 1)

    def test_empty_envelope_is_a_protocol_error_not_a_noop(self):
        self.proto.dataReceived(frame(b""))
        self.assertTrue(self.transport.disconnecting)
        self.assertIn("empty or unknown body", self.proto.errors[0])

    def test_frames_after_an_error_are_ignored(self):
        good = frame(pb.Request(id=9, get=pb.GetRequest(key=b"k")).SerializeToString())
        self.proto.dataReceived(frame(b"") + good)
        self.assertEqual(self.proto.received, [])

    def test_refuses_to_send_an_oversized_frame(self):
        big = pb.Request(id=1, put=pb.PutRequest(key=b"k", value=b"v" * 2000))
        self.assertRaises(FrameError, self.proto.send_envelope, big)
        self.assertEqual(self.transport.value(), b"")


class RaftCodecTests(SynchronousTestCase):
    def test_round_trip(self):
        msg = Message(type=1, to="b", frm="a", term=3, log_term=2, index=7,
                      entries=[Entry(8, 3, b"x"), Entry(9, 3, b"", 1)], commit=6,
                      reject=True, reject_hint=5, hint_term=2, context=b"ctx")
        wire = message_to_pb(msg).SerializeToString()
        self.assertEqual(message_from_pb(pb.RaftMessage.FromString(wire)), msg)
