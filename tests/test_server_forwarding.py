"""The server layer's request path on one node, with no reactor: a
follower's writes sent to the leader and answered from its own apply
(`geocachedb.server.forwarding`), whole requests forwarded and answered once,
the wait for a leader, and the leader's side.  Time is the server's own
clock, advanced by `Server.tick`."""

import random
import unittest

from zope.interface import implementer
from zope.interface.verify import verifyObject

from geocachedb import errors
from geocachedb.interfaces import IPeerTransport, IStateMachine
from geocachedb.raft import types as t
from geocachedb.raft.memlog import MemoryRaftLog
from geocachedb.raft.types import Entry, Message, RaftConfig
from geocachedb.server import forwarding, server as server_module
from geocachedb.server.server import Server
from geocachedb.statemachine import KVStateMachine, encode_put
from geocachedb.storage.memory import MemoryStorage
from geocachedb.wire import geocache_pb2 as pb

TICKS_PER_SECOND = 10


@implementer(IPeerTransport)
class _Transport:
    """Records what the server sends; ``reachable`` and ``accept`` decide
    whether a send goes out."""

    def __init__(self):
        self.reachable = True
        self.accept = True
        self.proposals = []  # (leader, [commands])
        self.forwards = []  # (peer, forward id, Request)
        self.answers = []  # (peer, forward id, Response)
        self.members = None

    def send(self, message):
        pass

    def can_reach(self, peer_id):
        return self.reachable

    def send_proposals(self, leader_id, commands):
        if not self.accept:
            return list(commands)
        self.proposals.append((leader_id, list(commands)))
        return []

    def send_forward(self, peer_id, forward_id, request):
        self.forwards.append((peer_id, forward_id, request))
        return self.accept

    def send_forward_response(self, peer_id, forward_id, response):
        self.answers.append((peer_id, forward_id, response))

    def update_members(self, addresses, member_ids):
        self.members = sorted(member_ids)

    def connected_peers(self):
        return set()

    def isolate(self, peer_ids):
        pass

    def heal(self):
        pass


def _server(voters=("n1",), transport=None):
    transport = transport or _Transport()
    server = Server("n1", list(voters), MemoryRaftLog(), transport,
                    KVStateMachine(MemoryStorage()), random.Random(5),
                    RaftConfig(election_ticks=10, heartbeat_ticks=1),
                    schedule=lambda: None, ticks_per_second=TICKS_PER_SECOND)
    return server, transport


def _leader():
    server, transport = _server()
    server.tick()  # a single voter elects itself on its first tick
    server.process()
    assert server.replica.role == "leader"
    return server, transport


def _follower():
    """n1 follows n2 (a heartbeat told it so)."""
    server, transport = _server(voters=("n1", "n2"))
    server.receive(Message(t.HEARTBEAT, "n1", "n2", 1))
    server.process()
    assert server.replica.leader_id == "n2"
    return server, transport


def _answers():
    got = []
    return got, lambda result, error: got.append((result, error))


def _responses():
    got = []
    return got, got.append


def _put(key=b"k", value=b"v", **session):
    request = pb.Request(id=1, **session)
    request.put.key = key
    request.put.value = value
    return request


class InterfaceTests(unittest.TestCase):
    def test_the_fakes_and_the_state_machine_provide_their_interfaces(self):
        server, transport = _server()
        verifyObject(IPeerTransport, transport)
        verifyObject(IStateMachine, server.state_machine)


class SentWriteTests(unittest.TestCase):
    def test_a_follower_sends_a_clients_put_to_the_leader_and_answers_on_apply(self):
        server, transport = _follower()
        got, respond = _responses()
        server.handle(_put(client_id=7, seq=1, ack_floor=1), respond)
        self.assertEqual(transport.proposals, [])  # sent at the end of the round
        server.process()
        [(leader, [sent])] = transport.proposals
        self.assertEqual(leader, "n2")
        command = pb.Command.FromString(sent)
        self.assertEqual((command.put.key, command.client_id, command.seq), (b"k", 7, 1))
        self.assertNotEqual(command.proposal_id, 0)
        self.assertEqual(got, [])
        # The entry arrives from the leader and is applied here.
        server.forwarding.applied([Entry(11, 2, b"other"), Entry(12, 2, sent)], [None, _put_result(12)])
        [response] = got
        self.assertEqual(response.put.index, 12)
        # Answered once: the same bytes applied again answer nobody.
        server.forwarding.applied([Entry(13, 2, sent)], [_put_result(13)])
        self.assertEqual(len(got), 1)

    def test_identical_writes_are_sent_and_answered_apart(self):
        server, transport = _follower()
        got, callback = _answers()
        data = encode_put(b"k", b"same")
        server.forwarding.propose_via("n2", data, callback)
        server.forwarding.propose_via("n2", data, callback)
        server.process()
        [(_, [first, second])] = transport.proposals
        self.assertNotEqual(first, second)
        server.forwarding.applied([Entry(6, 1, second)], [_put_result(6)])
        server.forwarding.applied([Entry(5, 1, first)], [_put_result(5)])
        self.assertEqual([r.put.index for r, _ in got], [6, 5])

    def test_someone_elses_identical_write_does_not_answer_a_sent_one(self):
        # The same put from another client (no client id), committed before
        # and applied here late, is not this write: this one may be lost.
        server, _ = _follower()
        got, callback = _answers()
        data = encode_put(b"k", b"v")
        server.forwarding.propose_via("n2", data, callback)
        server.forwarding.applied([Entry(3, 1, data)], [_put_result(3)])
        self.assertEqual(got, [])

    def test_an_unapplied_write_fails_after_the_timeout(self):
        server, _ = _follower()
        got, callback = _answers()
        server.forwarding.propose_via("n2", encode_put(b"k", b"v"), callback)
        timeout = forwarding.SENT_WRITE_SECONDS * TICKS_PER_SECOND
        for _ in range(timeout - 1):
            server.deadlines.tick()
        self.assertEqual(got, [])
        server.deadlines.tick()
        [(result, error)] = got
        self.assertIsNone(result)
        self.assertIsInstance(error, errors.Unavailable)
        self.assertIn("outcome is unknown", str(error))

    def test_an_unreachable_leader_is_refused_at_once(self):
        server, transport = _follower()
        transport.reachable = False
        got, callback = _answers()
        self.assertFalse(server.forwarding.propose_via("n2", encode_put(b"k", b"v"), callback))
        # Through the request path: proposed here, refused as NOT_LEADER
        # (nothing was appended), with the leader's id for the client.
        responses, respond = _responses()
        transport.accept = False  # and the whole-request forward fails too
        server.handle(_put(), respond)
        [response] = responses
        self.assertEqual(response.error.code, pb.UNAVAILABLE)

    def test_unsent_writes_fail_at_once(self):
        server, transport = _follower()
        transport.accept = False
        got, callback = _answers()
        server.forwarding.propose_via("n2", encode_put(b"k", b"v"), callback)
        server.process()
        [(_, error)] = got
        self.assertIsInstance(error, errors.Unavailable)
        self.assertEqual(len(server.forwarding._sent), 0)

    def test_closing_fails_the_writes_still_waiting(self):
        server, _ = _follower()
        got, callback = _answers()
        server.forwarding.propose_via("n2", encode_put(b"k", b"v"), callback)
        server.close()
        [(_, error)] = got
        self.assertIsInstance(error, errors.Unavailable)


class LeaderSideTests(unittest.TestCase):
    def test_the_leader_proposes_valid_commands_and_drops_the_rest(self):
        server, _ = _leader()
        server.proposals_received([
            encode_put(b"good", b"v"),
            b"\xff\xff not a command",
            encode_put(b"\x00\x00geocache/sessions/x", b"reserved key"),
            encode_put(b"", b"empty key"),
            encode_put(b"big", b"x" * (1024 * 1024 + 1)),
        ])
        server.process()
        self.assertEqual(server.state_machine.get(b"good"), b"v")
        self.assertIsNone(server.state_machine.get(b"\x00\x00geocache/sessions/x"))
        self.assertIsNone(server.state_machine.get(b"big"))
        self.assertEqual(server.metrics.errors["DROPPED_PROPOSAL"], 4)

    def test_a_forwarded_request_is_answered_to_the_follower_that_sent_it(self):
        server, transport = _leader()
        server.forward_received("n3", 77, _put(b"fk"))
        server.process()
        [(peer, fid, response)] = transport.answers
        self.assertEqual((peer, fid), ("n3", 77))
        self.assertGreater(response.put.index, 0)
        self.assertEqual(server.state_machine.get(b"fk"), b"v")


class WholeRequestTests(unittest.TestCase):
    def member(self, action, node_id):
        request = pb.Request(id=5)
        request.member.action = action
        request.member.node_id = node_id
        return request

    def test_a_follower_forwards_a_membership_change_and_relays_the_answer_once(self):
        server, transport = _follower()
        got, respond = _responses()
        server.handle(self.member("remove", "n2"), respond)
        [(peer, fid, request)] = transport.forwards
        self.assertEqual((peer, request.member.action, request.member.node_id), ("n2", "remove", "n2"))
        answer = pb.Response(id=5)
        answer.member.members.add(id="n1", role="voter")
        server.forward_answered(fid, answer)
        server.forward_answered(fid, answer)  # a duplicate is ignored
        self.assertEqual([list(r.member.members) for r in got], [list(answer.member.members)])

    def test_an_unanswered_forward_fails_after_the_timeout(self):
        server, transport = _follower()
        got, respond = _responses()
        server.handle(self.member("promote", "n3"), respond)
        for _ in range(forwarding.FORWARD_SECONDS * TICKS_PER_SECOND):
            server.deadlines.tick()
        [response] = got
        self.assertEqual(response.error.code, pb.UNAVAILABLE)
        self.assertIn("did not answer in time", response.error.message)

    def test_losing_the_leader_fails_its_forwards_at_once(self):
        server, transport = _follower()
        got, respond = _responses()
        server.handle(self.member("promote", "n3"), respond)
        server.peer_lost("n9")  # another peer: nothing happens
        self.assertEqual(got, [])
        server.peer_lost("n2")
        [response] = got
        self.assertIn("connection to the leader n2 lost", response.error.message)

    def test_a_forwarded_request_is_never_forwarded_again(self):
        server, transport = _follower()
        server.forward_received("n3", 1, self.member("remove", "n3"))
        self.assertEqual(transport.forwards, [])
        [(peer, fid, response)] = transport.answers
        self.assertEqual(response.error.code, pb.NOT_LEADER)
        self.assertEqual(response.error.leader_id, "n2")


class LeaderWaitTests(unittest.TestCase):
    def test_a_request_waits_for_a_leader_and_then_runs(self):
        server, transport = _server(voters=("n1", "n2"))
        got, respond = _responses()
        request = pb.Request(id=3)
        request.get.key = b"k"
        server.handle(request, respond)
        self.assertEqual(got, [])  # waiting: no leader known yet
        server.receive(Message(t.HEARTBEAT, "n1", "n2", 1))
        server.process()
        # Retried now that n2 leads: a follower's read asks it for an index.
        self.assertEqual(got, [])
        self.assertEqual(len(server._waiting), 0)

    def test_a_request_fails_when_no_leader_comes_in_time(self):
        server, transport = _server(voters=("n1", "n2", "n3"))
        got, respond = _responses()
        server.handle(_put(), respond)
        wait = server_module.LEADER_WAIT_ELECTIONS * 10
        for _ in range(wait - 1):
            server.deadlines.tick()
        self.assertEqual(got, [])
        server.deadlines.tick()
        [response] = got
        self.assertEqual(response.error.code, pb.UNAVAILABLE)
        self.assertIn("no leader", response.error.message)


if __name__ == "__main__":
    unittest.main()


def _put_result(index):
    return pb.Response(put=pb.PutResponse(index=index))


class MembershipIdempotenceTests(unittest.TestCase):
    """A retried add/remove that already happened is answered "done" only
    after a ReadIndex round confirms this node still leads: a paused
    leader of an old term answered ``add n3`` from its out-of-date view
    (the simulator found it at seed 3434; the seeds moved since, so this
    pins it)."""

    def _three_voter_leader(self):
        server, transport = _server(voters=("n1", "n2", "n3"))
        server.replica.core.config.pre_vote = False
        for _ in range(40):
            server.tick()
            server.process()
            if server.replica.role == "candidate":
                break
        term = server.replica.term
        server.receive(Message(t.VOTE_RESP, "n1", "n2", term))
        server.process()
        self.assertEqual(server.replica.role, "leader")
        return server

    def _add_existing(self):
        server = self._three_voter_leader()
        self.assertTrue(server.replica.conf_committed())
        got, callback = _answers()
        # n2 is a member in this leader's view; nobody answers its
        # heartbeats (it may be deposed): no "already done".
        server.membership.change("add", "n2", "127.0.0.1:1", False, callback)
        for _ in range(3):
            server.tick()
            server.process()
        return got

    def test_a_leader_that_cannot_confirm_it_leads_does_not_answer_from_its_view(self):
        got = self._add_existing()
        self.assertEqual([r for r, e in got if e is None], [])

    def test_with_the_confirmation_put_back_it_answers_from_its_view(self):
        # The bug put back: the test above must be able to fail.
        from geocachedb.server.membership import Membership

        self.patch_attr(Membership, "_confirm_leadership", lambda self, callback: callback(None, None))
        got = self._add_existing()
        self.assertEqual(len([r for r, e in got if e is None]), 1)

    def patch_attr(self, obj, name, value):
        original = getattr(obj, name)
        setattr(obj, name, value)
        self.addCleanup(setattr, obj, name, original)
