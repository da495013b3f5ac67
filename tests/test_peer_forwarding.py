"""What the peer network (`geocachedb.node.peers`) carries for forwarding:
proposals batched and split to fit frames, whole requests and their
answers, and lost connections reported to the server.  The connection to
the leader is a stub that records what would be sent."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from geocachedb.node import peers
from geocachedb.wire import geocache_pb2 as pb


class _Config:
    cluster_id = "test"
    max_frame = 1 << 20
    peers = {"leader": "127.0.0.1:1"}


class _Server:
    def __init__(self):
        self.answered = []
        self.lost = []

    def forward_answered(self, forward_id, response):
        self.answered.append((forward_id, response))

    def peer_lost(self, peer_id):
        self.lost.append(peer_id)


class _Node:
    node_id = "follower"
    config = _Config()

    def __init__(self):
        self.server = _Server()


class _Connection:
    peer_id = "leader"
    expected_peer = "leader"

    def __init__(self, accept=True):
        self.sent = []
        self.accept = accept
        self.transport = None

    def try_send(self, envelope):
        self.sent.append(envelope)
        return self.accept


def _put(rid):
    request = pb.Request(id=rid)
    request.put.key = b"k%d" % rid
    request.put.value = b"v"
    return request


class ForwardTransportTests(unittest.TestCase):
    """Whole requests to the leader and answers back: carried, never
    decided here (the tables are `geocachedb.server.forwarding`'s)."""

    def setUp(self):
        self.node = _Node()
        self.network = peers.PeerNetwork(self.node, Clock())
        self.conn = _Connection()
        self.network.outgoing["leader"] = self.conn

    def test_a_forward_goes_out_and_its_answer_reaches_the_server(self):
        self.assertTrue(self.network.send_forward("leader", 9, _put(7)))
        [envelope] = self.conn.sent
        self.assertEqual((envelope.forward.id, envelope.forward.request.put.key), (9, b"k7"))
        reply = pb.Forward(id=9)
        reply.response.put.index = 42
        self.network.forward_received(self.conn, reply)
        self.assertEqual([(fid, r.put.index) for fid, r in self.node.server.answered], [(9, 42)])

    def test_a_full_buffer_or_no_connection_is_reported(self):
        self.conn.accept = False
        self.assertFalse(self.network.send_forward("leader", 1, _put(1)))
        del self.network.outgoing["leader"]
        self.assertFalse(self.network.send_forward("leader", 2, _put(2)))

    def test_losing_the_leader_connection_tells_the_server(self):
        self.network.connection_lost(self.conn)
        self.assertEqual(self.node.server.lost, ["leader"])

    def test_an_empty_forward_is_dropped(self):
        self.network.forward_received(self.conn, pb.Forward(id=3))
        self.assertEqual(self.network.dropped, {"empty forward": 1})
        self.assertEqual(self.node.server.answered, [])


class ProposalsTests(unittest.TestCase):
    """Client writes a follower sends to the leader: batched per turn, split
    to fit frames, and reported back when they cannot be sent."""

    def setUp(self):
        self.node = _Node()
        self.network = peers.PeerNetwork(self.node, Clock())
        self.conn = _Connection()
        self.network.outgoing["leader"] = self.conn

    def test_one_message_for_a_rounds_writes(self):
        commands = [b"cmd%d" % i for i in range(5)]
        self.assertEqual(self.network.send_proposals("leader", commands), [])
        [envelope] = self.conn.sent
        self.assertEqual(list(envelope.proposals.commands), commands)

    def test_large_commands_are_split_to_fit_frames(self):
        big = [bytes([i]) * (self.network.max_frame // 3) for i in range(5)]
        self.assertEqual(self.network.send_proposals("leader", big), [])
        self.assertGreater(len(self.conn.sent), 1)
        sent = [c for envelope in self.conn.sent for c in envelope.proposals.commands]
        self.assertEqual(sent, big)
        for envelope in self.conn.sent:
            self.assertLessEqual(len(envelope.SerializeToString()), self.network.max_frame)

    def test_a_full_buffer_reports_the_writes_unsent(self):
        self.conn.accept = False
        self.assertEqual(self.network.send_proposals("leader", [b"a"]), [b"a"])
        self.assertEqual(self.network.dropped, {"proposals: send buffer full": 1})

    def test_a_lost_leader_connection_reports_the_writes_unsent(self):
        del self.network.outgoing["leader"]
        self.assertEqual(self.network.send_proposals("leader", [b"a"]), [b"a"])
        self.assertFalse(self.network.can_reach("leader"))


class AppendEncodingTests(unittest.TestCase):
    """AppendEntries are encoded with their entries cached across
    followers; the bytes must parse to exactly the message every time."""

    def setUp(self):
        self.network = peers.PeerNetwork(_Node(), Clock())

    def check(self, message):
        from geocachedb.wire.raft_codec import message_from_pb

        data = self.network._encode_append(message)
        self.assertEqual(message_from_pb(pb.PeerMessage.FromString(data).raft), message)

    def test_same_entries_to_two_followers_and_then_others(self):
        from geocachedb.raft.types import Entry, Message

        entries = [Entry(i, 3, b"data %d" % i) for i in range(5, 25)]
        for to in ("b", "c"):
            self.check(Message(type=1, to=to, frm="a", term=3, log_term=3, index=4, entries=entries, commit=4))
        # A shorter slice, then entries of a later term at the same indexes:
        # neither may reuse the cached bytes.
        self.check(Message(type=1, to="b", frm="a", term=3, log_term=3, index=4, entries=entries[:3], commit=7))
        later = [Entry(i, 4, b"other %d" % i) for i in range(5, 25)]
        self.check(Message(type=1, to="c", frm="a", term=4, log_term=3, index=4, entries=later, commit=7))
        # Overlapping slices of the cached entries, as tail batching sends.
        self.check(Message(type=1, to="b", frm="a", term=4, log_term=4, index=9, entries=later[5:12], commit=7))
        self.check(Message(type=1, to="c", frm="a", term=4, log_term=4, index=6, entries=later[2:20], commit=9))

    def test_the_cache_starts_over_past_its_bounds(self):
        from geocachedb.raft.types import Entry, Message

        self.patch(peers, "ENTRY_CACHE_SIZE", 10)
        self.patch(peers, "ENTRY_CACHE_BYTES", 1000)
        for start in range(1, 200, 7):
            entries = [Entry(i, 2, b"x" * (i % 50)) for i in range(start, start + 7)]
            self.check(Message(type=1, to="b", frm="a", term=2, log_term=2, index=start - 1,
                               entries=entries, commit=start))
            self.assertLessEqual(len(self.network._entry_cache), 10 + 7)
            self.assertLessEqual(self.network._entry_cache_bytes, 1000 + 7 * 60)
