"""A follower's client writes (`Node.propose_via`) and the leader's side
(`Node.propose_forwarded`), on real nodes with in-memory storage, a real
Raft log in a temporary directory, and a `task.Clock` for time."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from geocachedb import errors
from geocachedb.node import node as node_module
from geocachedb.node.kvservice import KVService
from geocachedb.node.node import Node, NodeConfig
from geocachedb.raft.types import Entry
from geocachedb.statemachine import PutResult, encode_put
from geocachedb.wire import geocache_pb2 as pb


class _Transport:
    """What the node needs of the peer network for forwarded writes."""

    def __init__(self, node, reachable=True):
        self.reachable = reachable
        self.queued = []
        self.sent = []

    def send(self, message):
        pass

    def can_reach(self, peer_id):
        return self.reachable

    def queue_proposal(self, leader_id, command):
        self.queued.append((leader_id, command))

    def send_proposals(self):
        if self.queued:
            self.sent.append(self.queued)
            self.queued = []


class NodeForwardingTests(unittest.TestCase):
    def start(self, peers=None, reachable=True):
        self.clock = Clock()
        config = NodeConfig("n1", self.mktemp(), storage="memory", peers=peers or {})
        self.transport = None

        def factory(node):
            self.transport = _Transport(node, reachable)
            return self.transport

        node = Node(config, reactor=self.clock, transport_factory=factory if peers else None)
        KVService(node)
        node.startService()
        self.addCleanup(node.stopService)
        return node

    def answers(self):
        got = []
        return got, lambda result, error: got.append((result, error))

    def test_the_leader_proposes_valid_commands_and_drops_the_rest(self):
        node = self.start()
        self.clock.advance(0.1)  # a single voter elects itself on its first tick
        self.clock.advance(0)
        self.assertEqual(node.replica.leader_id, "n1")
        node.propose_forwarded([
            encode_put(b"good", b"v"),
            b"\xff\xff not a command",
            encode_put(b"\x00\x00geocache/sessions/x", b"reserved key"),
            encode_put(b"", b"empty key"),
            encode_put(b"big", b"x" * (node.config.max_value + 1)),
        ])
        self.clock.advance(0)
        self.assertEqual(node.state_machine.get(b"good"), b"v")
        self.assertIsNone(node.state_machine.get(b"\x00\x00geocache/sessions/x"))
        self.assertIsNone(node.state_machine.get(b"big"))
        self.assertEqual(node.metrics.errors["DROPPED_PROPOSAL"], 4)

    def sent(self):
        """The commands the node sent to the leader so far."""
        self.clock.advance(0)  # end of the turn: one Proposals message
        return [command for batch in self.transport.sent for _, command in batch]

    def test_a_sent_write_is_answered_when_applied_here(self):
        node = self.start(peers={"n2": "127.0.0.1:1"})
        got, callback = self.answers()
        data = encode_put(b"k", b"v", client_id=7, seq=1, ack_floor=1)
        self.assertTrue(node.propose_via("n2", data, callback))
        [sent] = self.sent()
        self.assertEqual(len(self.transport.sent), 1)
        command = pb.Command.FromString(sent)
        self.assertEqual((command.put.key, command.client_id, command.seq), (b"k", 7, 1))
        self.assertNotEqual(command.proposal_id, 0)
        self.assertEqual(got, [])
        # The entry arrives from the leader and is applied here.
        result = PutResult(12)
        node.replica.on_apply([Entry(11, 2, b"other"), Entry(12, 2, sent)], [None, result])
        self.assertEqual(got, [(result, None)])
        # Answered once: the same bytes applied again answer nobody.
        node.replica.on_apply([Entry(13, 2, sent)], [PutResult(13)])
        self.assertEqual(len(got), 1)

    def test_identical_writes_are_sent_and_answered_apart(self):
        node = self.start(peers={"n2": "127.0.0.1:1"})
        got, callback = self.answers()
        data = encode_put(b"k", b"same")
        node.propose_via("n2", data, callback)
        node.propose_via("n2", data, callback)
        first, second = self.sent()
        self.assertNotEqual(first, second)
        node.replica.on_apply([Entry(6, 1, second)], [PutResult(6)])
        node.replica.on_apply([Entry(5, 1, first)], [PutResult(5)])
        self.assertEqual([r.index for r, _ in got], [6, 5])

    def test_someone_elses_identical_write_does_not_answer_a_sent_one(self):
        # The same put from another client (no client id), committed before
        # and applied here late, is not this write: this one may be lost.
        node = self.start(peers={"n2": "127.0.0.1:1"})
        got, callback = self.answers()
        data = encode_put(b"k", b"v")
        node.propose_via("n2", data, callback)
        node.replica.on_apply([Entry(3, 1, data)], [PutResult(3)])
        self.assertEqual(got, [])

    def test_an_unapplied_write_fails_after_the_timeout(self):
        node = self.start(peers={"n2": "127.0.0.1:1"})
        got, callback = self.answers()
        node.propose_via("n2", encode_put(b"k", b"v"), callback)
        self.clock.pump([0.1] * int(10 * (node_module.SENT_WRITE_TIMEOUT - 1)))
        self.assertEqual(got, [])
        self.clock.pump([0.1] * 25)
        [(result, error)] = got
        self.assertIsNone(result)
        self.assertIsInstance(error, errors.Unavailable)
        self.assertIn("outcome is unknown", str(error))
        self.assertEqual(node._sent_writes, {})

    def test_an_unreachable_leader_is_refused_at_once(self):
        node = self.start(peers={"n2": "127.0.0.1:1"}, reachable=False)
        got, callback = self.answers()
        self.assertFalse(node.propose_via("n2", encode_put(b"k", b"v"), callback))
        self.assertEqual(node._sent_writes, {})

    def test_unsent_writes_fail_at_once(self):
        node = self.start(peers={"n2": "127.0.0.1:1"})
        got, callback = self.answers()
        node.propose_via("n2", encode_put(b"k", b"v"), callback)
        [command] = self.transport.queued
        node.unsent_writes([command[1]], "too much traffic to the leader; try again")
        [(_, error)] = got
        self.assertIsInstance(error, errors.Unavailable)
        self.assertEqual(node._sent_writes, {})

    def test_stopping_fails_the_writes_still_waiting(self):
        node = self.start(peers={"n2": "127.0.0.1:1"})
        got, callback = self.answers()
        node.propose_via("n2", encode_put(b"k", b"v"), callback)
        node.stopService()
        [(_, error)] = got
        self.assertIsInstance(error, errors.Unavailable)
