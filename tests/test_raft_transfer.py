"""Leadership transfer (thesis §3.10): the leader stops taking proposals,
brings the target up to date, sends TIMEOUT_NOW; the target campaigns at
once, and voters grant despite the leader lease; an election timeout later
the transfer is abandoned."""

from twisted.trial.unittest import SynchronousTestCase

from geocachedb import errors
from geocachedb.raft import types as t
from geocachedb.raft.types import Message

from tests.raft_helpers import Network, ReplicaNet, new_core


def three(**kw):
    net = Network(["a", "b", "c"], **kw)
    net.elect("a")
    return net, net.cores["a"]


class CoreTransfer(SynchronousTestCase):
    def test_transfer_to_an_up_to_date_voter_sends_timeout_now_at_once_and_it_wins(self):
        net, a = three()
        self.assertIsNone(a.transfer_leadership("b"))
        net.flush("a")
        self.assertEqual(len(net.sent_to("b", t.TIMEOUT_NOW)), 1)
        self.assertEqual(net.leader(), ["b"])
        self.assertEqual(net.cores["b"].term, 2)
        self.assertEqual(a.lead, "b")

    def test_a_lagging_target_is_brought_up_to_date_before_timeout_now(self):
        net, a = three()
        net.isolate("b")
        for _ in range(3):
            net.propose("a")
        net.heal()
        held = net.hold(lambda m: m.type == t.APP and m.to == "b")
        a.transfer_leadership("b")
        net.flush("a")
        # b's answer to the append lost while it was cut off never comes:
        # the heartbeat answer makes the leader probe b's window.
        net.tick("a")
        self.assertFalse(net.sent_to("b", t.TIMEOUT_NOW))
        self.assertTrue(held)
        net.hook = None
        net.send(*held)
        self.assertEqual(len(net.sent_to("b", t.TIMEOUT_NOW)), 1)
        self.assertEqual(net.leader(), ["b"])
        self.assertEqual(net.cores["b"].log.last_index(), a.log.last_index())

    def test_the_leader_takes_no_proposals_while_transferring(self):
        net, a = three()
        net.isolate("b")
        a.transfer_leadership("b")
        self.assertIsNone(a.propose(b"x"))
        self.assertEqual(a.propose_conf_change("add_voter", "d"), (None, "not leader"))

    def test_the_target_skips_pre_vote_and_voters_grant_despite_the_lease(self):
        net, a = three(pre_vote=True, check_quorum=True)
        before = len(net.sent)
        a.transfer_leadership("c")
        net.flush("a")
        after = net.sent[before:]
        self.assertFalse([m for m in after if m.type == t.PRE_VOTE])
        votes = [m for m in after if m.type == t.VOTE and m.to == "b"]
        self.assertEqual([m.context for m in votes], [t.TRANSFER_CONTEXT])
        self.assertEqual(net.leader(), ["c"])

    def test_an_ordinary_vote_request_still_respects_the_lease(self):
        net, a = three(check_quorum=True)
        b = net.cores["b"]
        b.step(Message(t.VOTE, "b", "c", 5, log_term=1, index=1))
        self.assertEqual((b.term, b.lead), (1, "a"))

    def test_a_transfer_is_abandoned_after_an_election_timeout(self):
        net, a = three()
        net.isolate("b")
        a.transfer_leadership("b")
        self.assertEqual(a.lead_transferee, "b")
        for _ in range(a.config.election_ticks - 1):
            a.tick()
        self.assertEqual(a.lead_transferee, "b")
        a.tick()
        self.assertIsNone(a.lead_transferee)
        self.assertIsNotNone(a.propose(b"again"))

    def test_only_a_voter_can_be_the_target(self):
        net, a = three()
        self.assertEqual(a.transfer_leadership("zz"), "zz is not a voter")
        a.propose_conf_change("add_learner", "d")
        self.assertEqual(a.transfer_leadership("d"), "d is not a voter")
        self.assertEqual(net.cores["b"].transfer_leadership("c"), "not leader")
        self.assertIsNone(a.transfer_leadership("a"))
        self.assertIsNone(a.lead_transferee)

    def test_a_node_whose_removal_is_in_the_log_is_no_target(self):
        net, a = three()
        net.drop(lambda m: m.type == t.APP_RESP)
        a.propose_conf_change("remove", "b")  # not committed, but in force
        self.assertEqual(a.transfer_leadership("b"), "b is not a voter")

    def test_a_node_that_is_not_a_voter_ignores_timeout_now(self):
        d = new_core("d", ["a", "b", "c"])  # a learner, or removed
        d.step(Message(t.TIMEOUT_NOW, "d", "a", 1))
        self.assertEqual((d.role, d.term), (t.FOLLOWER, 1))


class ReplicaTransfer(SynchronousTestCase):
    def test_the_callback_fires_once_the_target_leads_and_writes_go_on(self):
        net = ReplicaNet(["a", "b", "c"])
        leader = net.until_leader()
        net.write_many(10)
        target = next(i for i in net.ids if i != leader.node_id)
        out = []
        leader.transfer_leadership(target, lambda r, e: out.append((r, e)))
        net.deliver()
        net.tick(2)
        self.assertEqual(out, [(None, None)])
        self.assertEqual(net.until_leader().node_id, target)
        results = net.write_many(5, b"after")
        self.assertTrue(all(e is None for _, e in results))

    def test_a_proposal_during_a_transfer_is_refused_with_no_leader_hint_to_follow_yet(self):
        net = ReplicaNet(["a", "b", "c"])
        leader = net.until_leader()
        target = next(i for i in net.ids if i != leader.node_id)
        net.isolate(target)
        leader.transfer_leadership(target, lambda r, e: None)
        out = net.put(b"k", b"v", via=leader)
        self.assertIsInstance(out[0][1], errors.NotLeader)

    def test_an_unreachable_target_fails_the_transfer_and_the_leader_serves_again(self):
        net = ReplicaNet(["a", "b", "c"], check_quorum=False)
        leader = net.until_leader()
        target = next(i for i in net.ids if i != leader.node_id)
        net.isolate(target)
        out = []
        leader.transfer_leadership(target, lambda r, e: out.append((r, e)))
        net.tick(net.config.election_ticks + 1)
        self.assertEqual(len(out), 1)
        self.assertIsInstance(out[0][1], errors.Unavailable)
        self.assertEqual(leader.role, t.LEADER)
        self.assertIsNone(net.put(b"k", b"v", via=leader)[0][1])

    def test_errors_for_a_follower_a_non_voter_and_oneself(self):
        net = ReplicaNet(["a", "b", "c"])
        leader = net.until_leader()
        follower = next(r for r in net.replicas.values() if r is not leader)
        out = []
        follower.transfer_leadership(leader.node_id, lambda r, e: out.append(e))
        leader.transfer_leadership("nobody", lambda r, e: out.append(e))
        leader.transfer_leadership(leader.node_id, lambda r, e: out.append(e))
        self.assertIsInstance(out[0], errors.NotLeader)
        self.assertIsInstance(out[1], errors.InvalidArgument)
        self.assertIsNone(out[2])

    def test_removing_the_leader_hands_over_without_an_election_timeout(self):
        net = ReplicaNet(["a", "b", "c"])
        leader = net.until_leader()
        old = leader.node_id
        self.assertIsNone(net.conf_change("remove", old)[0][1])
        # no ticks needed: TIMEOUT_NOW went out when the removal committed
        leaders = [r for r in net.replicas.values() if r.role == t.LEADER]
        self.assertEqual(len(leaders), 1)
        self.assertNotEqual(leaders[0].node_id, old)
        self.assertFalse(net.replicas[old].is_member)
