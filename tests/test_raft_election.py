"""Leader election (Raft §5.2, pre-vote §thesis 9.6, check-quorum §thesis 6.2)."""

from twisted.trial.unittest import SynchronousTestCase

from tests.raft_helpers import HardState, Message, Network, drain, log_with, new_core, t


class ElectionTests(SynchronousTestCase):
    def test_follower_campaigns_after_randomized_election_timeout(self):
        net = Network(["a", "b", "c"])
        a = net.cores["a"]
        timeout = a.randomized_election_timeout
        self.assertTrue(10 <= timeout < 20)
        net.tick("a", timeout - 1)
        self.assertEqual(a.role, t.FOLLOWER)
        net.tick("a")
        self.assertEqual(a.role, t.LEADER)
        self.assertEqual(a.term, 1)
        for node_id in ("b", "c"):
            self.assertEqual(net.cores[node_id].lead, "a")
            self.assertEqual(net.cores[node_id].vote, "a")

    def test_single_voter_elects_itself_on_first_tick_and_commits_alone(self):
        core = new_core("solo", ["solo"])
        core.tick()
        self.assertEqual(core.role, t.LEADER)
        self.assertEqual(core.term, 1)
        applied = []
        drain(core, applied)
        # the leader's empty entry is committed with only its own persisted copy
        self.assertEqual(core.log.committed, 1)
        index = core.propose(b"cmd")
        drain(core, applied)
        self.assertEqual(core.log.committed, index)
        self.assertEqual([e.index for e in applied], [1, 2])
        self.assertEqual(core.log.storage.hard_state(), HardState(1, "solo", 2))

    def test_candidate_with_majority_of_votes_becomes_leader_of_new_term(self):
        net = Network(["a", "b", "c", "d", "e"])
        net.isolate("d")
        net.isolate("e")
        net.campaign("a")
        self.assertEqual(net.cores["a"].role, t.LEADER)

    def test_candidate_without_majority_stays_candidate_without_pre_vote(self):
        net = Network(["a", "b", "c", "d", "e"], pre_vote=False)
        for node_id in ("b", "c", "d"):
            net.isolate(node_id)
        net.campaign("a")
        self.assertEqual(net.cores["a"].role, t.CANDIDATE)
        self.assertEqual(net.cores["a"].term, 1)

    def test_split_vote_is_resolved_by_a_later_randomized_timeout(self):
        net = Network(["a", "b", "c", "d"], pre_vote=False)
        # a and b campaign at once and each gets one other vote: nobody wins
        net.cut_link("a", "b")
        net.cut_link("a", "d")
        net.cut_link("b", "c")
        net.cores["a"].campaign()
        net.cores["b"].campaign()
        net.flush("a")
        net.flush("b")
        self.assertEqual(net.cores["a"].role, t.CANDIDATE)
        self.assertEqual(net.cores["b"].role, t.CANDIDATE)
        net.heal()
        # Whoever times out first starts a new term and wins.
        for _ in range(40):
            for node_id in net.ids:
                net.tick(node_id)
            if net.leader():
                break
        self.assertEqual(len(net.leader()), 1)
        self.assertGreaterEqual(net.cores[net.leader()[0]].term, 2)

    def test_at_most_one_vote_per_term(self):
        core = new_core("a", ["a", "b", "c"])
        core.step(Message(t.VOTE, "a", "b", 1, log_term=0, index=0))
        core.step(Message(t.VOTE, "a", "c", 1, log_term=0, index=0))
        msgs = drain(core)
        self.assertEqual([(m.to, m.reject) for m in msgs], [("b", False), ("c", True)])
        self.assertEqual(core.log.storage.hard_state().vote, "b")

    def test_vote_is_denied_to_a_candidate_with_a_less_up_to_date_log(self):
        # §5.4.1: last term wins; on equal last terms the longer log wins.
        cases = [
            (2, 1, True),   # candidate's last term older
            (2, 2, True),   # same term, shorter log (our last index is 3)
            (3, 2, False),  # same term, same length
            (1, 3, False),  # newer last term, shorter log
        ]
        for cand_index, cand_term, rejected in cases:
            core = new_core("a", ["a", "b", "c"], log_with([1, 1, 2], HardState(2, None, 0)))
            core.step(Message(t.VOTE, "a", "b", 3, log_term=cand_term, index=cand_index))
            msgs = drain(core)
            self.assertEqual(len(msgs), 1)
            self.assertEqual(msgs[0].reject, rejected, (cand_index, cand_term))

    def test_vote_is_persisted_before_the_grant_is_sent(self):
        core = new_core("a", ["a", "b", "c"])
        core.step(Message(t.VOTE, "a", "b", 1))
        rd = core.ready()
        self.assertEqual(rd.messages_before_sync, [])
        self.assertEqual([m.type for m in rd.messages], [t.VOTE_RESP])
        self.assertTrue(rd.must_sync)
        self.assertEqual(rd.hard_state, HardState(1, "b", 0))

    def test_candidate_steps_down_on_append_from_leader_of_same_term(self):
        net = Network(["a", "b", "c"], pre_vote=False)
        net.isolate("c")
        net.campaign("a")
        c = net.cores["c"]
        c.campaign()  # term 1 candidate, isolated
        drain(c)
        self.assertEqual((c.role, c.term), (t.CANDIDATE, 1))
        net.heal()
        net.tick("a")  # heartbeat of term 1
        self.assertEqual((c.role, c.lead), (t.FOLLOWER, "a"))

    def test_higher_term_message_turns_leader_into_follower(self):
        net = Network(["a", "b", "c"], check_quorum=False, pre_vote=False)
        net.elect("a")
        net.send(Message(t.APP, "a", "b", 5))
        self.assertEqual((net.cores["a"].role, net.cores["a"].term), (t.FOLLOWER, 5))

    def test_a_rejected_higher_term_vote_request_does_not_restart_the_election_timer(self):
        # Figure 2: a follower's timer restarts only when it hears from the
        # leader or grants a vote.  Found by the simulator (seed 4503): two
        # candidates with stale logs and fast clocks kept resetting the
        # up-to-date nodes' timers, and nobody was ever elected.
        core = new_core("a", ["a", "b", "c"], log=log_with([1, 1, 1]), pre_vote=False,
                        check_quorum=False)
        for _ in range(5):
            core.tick()
        core.step(Message(t.VOTE, "a", "b", 4, log_term=1, index=1))  # stale log
        drain(core)
        self.assertEqual((core.term, core.vote, core.election_elapsed), (4, None, 5))
        core.step(Message(t.VOTE, "a", "c", 5, log_term=1, index=3))  # granted
        drain(core)
        self.assertEqual((core.term, core.vote, core.election_elapsed), (5, "c", 0))
