"""Forwarded client requests on a follower (`geocachedb.node.peers`): every
forward gets exactly one answer — the leader's, or UNAVAILABLE when the
leader does not answer in time, the connection to it is lost, or the node
stops.  Driven with `task.Clock`; the connection to the leader is a stub
that records what would be sent."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from geocachedb.node import peers
from geocachedb.wire import geocache_pb2 as pb


class _Config:
    cluster_id = "test"
    max_frame = 1 << 20
    peers = {"leader": "127.0.0.1:1"}


class _Node:
    node_id = "follower"
    config = _Config()

    def __init__(self):
        self.unsent = []

    def unsent_writes(self, commands, why):
        self.unsent.append((list(commands), why))


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


class ForwardingTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.network = peers.PeerNetwork(_Node(), self.clock)
        # Start only the timeout sweep: no dialing in a unit test.
        self.network._sweeper.start(peers.FORWARD_SWEEP_SECONDS, now=False)
        self.addCleanup(lambda: self.network._sweeper.running and self.network._sweeper.stop())
        self.conn = _Connection()
        self.network.outgoing["leader"] = self.conn
        self.answers = {}

    def forward(self, rid):
        self.network.forward("leader", _put(rid), lambda r, rid=rid: self.answers.setdefault(rid, []).append(r))

    def test_the_leaders_answer_is_relayed_once(self):
        self.forward(7)
        [envelope] = self.conn.sent
        self.assertEqual(envelope.forward.request.put.key, b"k7")
        reply = pb.Forward(id=envelope.forward.id)
        reply.response.id = 7
        reply.response.put.index = 42
        self.network.forward_received(self.conn, reply)
        self.network.forward_received(self.conn, reply)  # a duplicate is ignored
        self.clock.advance(peers.FORWARD_TIMEOUT + 2 * peers.FORWARD_SWEEP_SECONDS)
        self.assertEqual([r.put.index for r in self.answers[7]], [42])

    def test_an_unanswered_forward_fails_after_the_timeout(self):
        self.forward(1)
        self.clock.advance(peers.FORWARD_TIMEOUT / 2)
        self.forward(2)
        self.clock.advance(peers.FORWARD_TIMEOUT / 2 + peers.FORWARD_SWEEP_SECONDS)
        self.assertEqual(list(self.answers), [1])
        [answer] = self.answers[1]
        self.assertEqual(answer.error.code, pb.UNAVAILABLE)
        self.assertIn("did not answer in time", answer.error.message)
        self.clock.advance(peers.FORWARD_TIMEOUT / 2)
        self.assertEqual(sorted(self.answers), [1, 2])
        self.assertEqual(len(self.answers[1]), 1)

    def test_answered_forwards_do_not_hold_back_the_sweep(self):
        for rid in range(1, 4):
            self.forward(rid)
        first = self.conn.sent[0].forward.id
        reply = pb.Forward(id=first)
        reply.response.id = 1
        self.network.forward_received(self.conn, reply)
        self.clock.advance(peers.FORWARD_TIMEOUT + peers.FORWARD_SWEEP_SECONDS)
        self.assertEqual(sorted(self.answers), [1, 2, 3])
        self.assertFalse(self.answers[1][0].HasField("error"))
        self.assertTrue(all(self.answers[r][0].HasField("error") for r in (2, 3)))
        self.assertEqual(self.network._forwards, {})

    def test_a_full_send_buffer_fails_at_once(self):
        self.conn.accept = False
        self.forward(5)
        [answer] = self.answers[5]
        self.assertEqual(answer.error.code, pb.UNAVAILABLE)
        self.assertEqual(self.network._forwards, {})

    def test_losing_the_leader_connection_fails_its_forwards(self):
        self.forward(3)
        self.network.connection_lost(self.conn)
        [answer] = self.answers[3]
        self.assertIn("connection to the leader leader lost", answer.error.message)

    def test_stopping_fails_pending_forwards_and_the_sweep(self):
        self.forward(4)
        self.network.stop()
        self.assertEqual(self.answers[4][0].error.code, pb.UNAVAILABLE)
        self.assertFalse(self.network._sweeper.running)


class ProposalsTests(unittest.TestCase):
    """Client writes a follower sends to the leader: batched per turn, split
    to fit frames, and reported back when they cannot be sent."""

    def setUp(self):
        self.node = _Node()
        self.network = peers.PeerNetwork(self.node, Clock())
        self.conn = _Connection()
        self.network.outgoing["leader"] = self.conn

    def test_one_message_per_turn(self):
        for i in range(5):
            self.network.queue_proposal("leader", b"cmd%d" % i)
        self.network.send_proposals()
        [envelope] = self.conn.sent
        self.assertEqual(list(envelope.proposals.commands), [b"cmd%d" % i for i in range(5)])
        self.network.send_proposals()  # nothing queued: nothing sent
        self.assertEqual(len(self.conn.sent), 1)

    def test_large_commands_are_split_to_fit_frames(self):
        big = [bytes([i]) * (self.network.max_frame // 3) for i in range(5)]
        for command in big:
            self.network.queue_proposal("leader", command)
        self.network.send_proposals()
        self.assertGreater(len(self.conn.sent), 1)
        sent = [c for envelope in self.conn.sent for c in envelope.proposals.commands]
        self.assertEqual(sent, big)
        for envelope in self.conn.sent:
            self.assertLessEqual(len(envelope.SerializeToString()), self.network.max_frame)
        self.assertEqual(self.node.unsent, [])

    def test_a_full_buffer_reports_the_writes_unsent(self):
        self.conn.accept = False
        self.network.queue_proposal("leader", b"a")
        self.network.send_proposals()
        [(commands, why)] = self.node.unsent
        self.assertEqual(commands, [b"a"])
        self.assertIn("too much traffic", why)

    def test_a_lost_leader_connection_reports_the_writes_unsent(self):
        self.network.queue_proposal("leader", b"a")
        del self.network.outgoing["leader"]
        self.network.send_proposals()
        [(commands, why)] = self.node.unsent
        self.assertEqual(commands, [b"a"])
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
