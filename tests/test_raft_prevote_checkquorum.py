"""Pre-vote (thesis §9.6), check-quorum (thesis §6.2) and the leader lease
for votes (thesis §4.2.3): a node that was partitioned away does not raise
terms or depose a healthy leader, and a leader cut off from a quorum steps
down."""

from twisted.trial.unittest import SynchronousTestCase

from tests.raft_helpers import Message, Network, drain, new_core, t


class PreVoteTests(SynchronousTestCase):
    def test_partitioned_node_with_pre_vote_does_not_raise_its_term(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        net.isolate("c")
        net.tick("c", 100)
        c = net.cores["c"]
        self.assertEqual(c.term, 1)
        self.assertEqual(c.role, t.PRE_CANDIDATE)

    def test_rejoining_node_with_pre_vote_does_not_depose_a_healthy_leader(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        net.isolate("c")
        net.tick("c", 100)
        net.heal()
        net.tick("a")
        self.assertEqual((a.role, a.term), (t.LEADER, 1))
        self.assertEqual((net.cores["c"].role, net.cores["c"].lead), (t.FOLLOWER, "a"))

    def test_without_pre_vote_a_rejoining_node_disrupts_the_leader(self):
        # The contrast case: why pre-vote exists.
        net = Network(["a", "b", "c"], pre_vote=False, check_quorum=False)
        a = net.elect("a")
        net.isolate("c")
        net.tick("c", 100)
        self.assertGreater(net.cores["c"].term, 1)
        net.heal()
        net.tick("c", 20)  # c's next campaign carries its inflated term
        self.assertNotEqual(net.cores["a"].term, 1)
        self.assertFalse(a.role == t.LEADER and a.term == 1)
        self.assertGreater(a.term, 1)

    def test_pre_vote_does_not_change_the_receivers_term_or_vote(self):
        core = new_core("b", ["a", "b", "c"])
        core.step(Message(t.PRE_VOTE, "b", "a", 1, log_term=0, index=0))
        msgs = drain(core)
        self.assertEqual([(m.type, m.term, m.reject) for m in msgs], [(t.PRE_VOTE_RESP, 1, False)])
        self.assertEqual((core.term, core.vote), (0, None))

    def test_pre_candidate_becomes_candidate_only_after_a_quorum_of_pre_votes(self):
        net = Network(["a", "b", "c"])
        net.isolate("b")
        net.isolate("c")
        net.campaign("a")
        self.assertEqual((net.cores["a"].role, net.cores["a"].term), (t.PRE_CANDIDATE, 0))
        net.heal()
        net.campaign("a")
        self.assertEqual((net.cores["a"].role, net.cores["a"].term), (t.LEADER, 1))

    def test_pre_vote_is_rejected_for_a_stale_log(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        net.isolate("c")
        net.propose("a", b"x")
        # the lease must have run out on b for the log check to matter
        net.tick("b", 10)
        net.heal()
        net.isolate("a")
        net.campaign("c")
        # b refused (its log is longer); with a unreachable c cannot win and
        # the term stays where it was
        self.assertEqual(net.cores["c"].role, t.PRE_CANDIDATE)
        self.assertEqual(net.cores["b"].term, 1)
        self.assertEqual(net.cores["c"].term, 1)


class CheckQuorumTests(SynchronousTestCase):
    def test_leader_steps_down_when_it_has_not_heard_from_a_quorum(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        net.isolate("a")
        net.tick("a", 9)
        self.assertEqual(a.role, t.LEADER)
        # a full election timeout without any answer
        net.tick("a", 11)
        self.assertEqual(a.role, t.FOLLOWER)
        self.assertIsNone(a.lead)

    def test_leader_with_a_quorum_of_active_peers_stays_leader(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        net.isolate("c")
        net.tick("a", 50)
        self.assertEqual((a.role, a.term), (t.LEADER, 1))

    def test_follower_in_lease_ignores_vote_request_with_higher_term(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        b = net.cores["b"]
        b.step(Message(t.VOTE, "b", "c", 5, log_term=1, index=10))
        self.assertEqual(drain(b), [])
        self.assertEqual((b.term, b.lead), (1, "a"))

    def test_follower_out_of_lease_answers_vote_request(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        net.isolate("a")
        net.tick("b", 10)
        b = net.cores["b"]
        b.step(Message(t.VOTE, "b", "c", 5, log_term=1, index=10))
        self.assertEqual([(m.type, m.reject) for m in drain(b)], [(t.VOTE_RESP, False)])
        self.assertEqual(b.term, 5)

    def test_stale_leader_learns_new_term_from_answer_to_its_heartbeat(self):
        net = Network(["a", "b", "c"], check_quorum=False)
        a = net.elect("a")
        net.isolate("a")
        net.tick("b", 30)  # b times out, pre-votes with c and wins term 2
        self.assertEqual(net.cores["b"].role, t.LEADER)
        net.heal()
        net.tick("a")  # a's stale heartbeat is answered with term 2
        self.assertEqual((a.role, a.term), (t.FOLLOWER, 2))

    def test_stale_leader_is_told_the_new_term_with_both_options_off(self):
        # Without pre-vote and check-quorum the only other way the new term
        # reaches a is a vote request, which a node that missed membership
        # changes may never send it (simulator seed 21426, 3 nodes).
        net = Network(["a", "b", "c"], check_quorum=False, pre_vote=False)
        a = net.elect("a")
        net.isolate("a")
        net.tick("b", 30)
        self.assertEqual(net.cores["b"].role, t.LEADER)
        net.heal()
        net.tick("a")
        self.assertEqual((a.role, a.term), (t.FOLLOWER, net.cores["b"].term))

    def test_leader_that_stepped_down_answers_nothing_as_leader(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        net.isolate("a")
        net.tick("a", 20)
        self.assertEqual(a.propose(b"x"), None)
