"""Tests named after sentences of the Raft paper (§5), in the spirit of
etcd-io/raft's raft_paper_test.go."""

from twisted.trial.unittest import SynchronousTestCase

from tests.raft_helpers import HardState, Message, Network, drain, log_with, new_core, t


class PaperTests(SynchronousTestCase):
    def test_5_1_server_with_stale_term_updates_to_the_larger_term(self):
        for role_setup in ("follower", "candidate", "leader"):
            net = Network(["a", "b", "c"], pre_vote=False, check_quorum=False)
            a = net.cores["a"]
            if role_setup == "candidate":
                a.campaign()
                drain(a)
            elif role_setup == "leader":
                net.elect("a")
            a.step(Message(t.APP, "a", "b", 9))
            self.assertEqual((a.term, a.role), (9, t.FOLLOWER), role_setup)

    def test_5_1_request_with_stale_term_is_rejected(self):
        core = new_core("a", ["a", "b", "c"], log_with([1, 2], HardState(2, None, 0)), pre_vote=False)
        core.step(Message(t.VOTE, "a", "b", 1, log_term=2, index=5))
        msgs = drain(core)
        self.assertTrue(all(m.term == 2 for m in msgs))
        self.assertEqual(core.vote, None)

    def test_5_2_leader_sends_heartbeats_every_heartbeat_interval(self):
        net = Network(["a", "b", "c"], heartbeat_ticks=3)
        net.elect("a")
        net.sent.clear()
        net.tick("a", 2)
        self.assertEqual([m for m in net.sent if m.type == t.HEARTBEAT], [])
        net.tick("a")
        self.assertEqual(sorted(m.to for m in net.sent if m.type == t.HEARTBEAT), ["b", "c"])

    def test_5_2_follower_that_hears_from_leader_does_not_campaign(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        for _ in range(50):
            net.tick("a")
            net.tick("b")
        self.assertEqual((net.cores["b"].role, net.cores["b"].term), (t.FOLLOWER, 1))

    def test_5_2_candidate_starts_a_new_election_after_an_election_timeout(self):
        net = Network(["a", "b", "c"], pre_vote=False)
        net.isolate("a")
        net.campaign("a")
        self.assertEqual(net.cores["a"].term, 1)
        net.tick("a", 20)
        self.assertEqual((net.cores["a"].role, net.cores["a"].term), (t.CANDIDATE, 2))

    def test_5_2_election_timeouts_are_randomized(self):
        timeouts = {new_core("a", ["a", "b", "c"], seed=s).randomized_election_timeout
                    for s in range(50)}
        self.assertGreater(len(timeouts), 5)
        self.assertTrue(all(10 <= x < 20 for x in timeouts))

    def test_5_2_the_same_seed_gives_the_same_run(self):
        def run():
            net = Network(["a", "b", "c", "d", "e"])
            for _ in range(30):
                for node_id in net.ids:
                    net.tick(node_id)
            return [(m.type, m.frm, m.to, m.term, m.index) for m in net.sent]
        self.assertEqual(run(), run())

    def test_5_3_leader_appends_the_proposal_and_replicates_it(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        index = net.propose("a", b"cmd")
        for node_id in net.ids:
            self.assertEqual(net.cores[node_id].log.entries(index, index + 1)[0].data, b"cmd")
        self.assertEqual(a.log.committed, index)
        self.assertEqual(net.applied["a"][-1].data, b"cmd")

    def test_5_3_proposal_on_follower_is_refused(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        self.assertIsNone(net.cores["b"].propose(b"x"))
        self.assertEqual(net.cores["b"].lead, "a")

    def test_5_4_2_new_leader_appends_an_empty_entry_of_its_term(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        [entry] = a.log.entries(1, 2)
        self.assertEqual((entry.term, entry.data), (a.term, b""))
        self.assertEqual(a.log.committed, 1)

    def test_5_4_leader_completeness_new_leader_holds_every_committed_entry(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        net.isolate("c")
        net.propose("a", b"x")
        committed = net.cores["a"].log.committed
        net.heal()
        net.isolate("a")
        # c (missing the entry) cannot win; b can
        net.tick("c", 10)  # out of lease
        net.tick("b", 10)
        net.campaign("c")
        self.assertNotEqual(net.cores["c"].role, t.LEADER)
        net.campaign("b")
        self.assertEqual(net.cores["b"].role, t.LEADER)
        self.assertGreaterEqual(net.cores["b"].log.last_index(), committed)
