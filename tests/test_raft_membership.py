"""Membership changes (thesis chapter 4): single-server changes used as soon
as they are in the log, one at a time and only after the leader committed
an entry of its term; learners; removing the leader; the configuration
across restarts and snapshots; removed nodes."""

from twisted.trial.unittest import SynchronousTestCase

from geocachedb import errors
from geocachedb.raft import confchange
from geocachedb.raft import types as t
from geocachedb.raft.confchange import ConfChangeBusy, ConfChangeError, ConfHistory
from geocachedb.raft.progress import ClusterConfig
from geocachedb.raft.types import Entry, Message

from tests.raft_helpers import Network, ReplicaNet, log_with, new_core


def conf_entry(index, term, voters, learners=()):
    return Entry(index, term, confchange.encode(ClusterConfig(voters, learners)), t.CONF)


class ChangeValidation(SynchronousTestCase):
    def test_each_kind_changes_one_member(self):
        c = ClusterConfig(["a", "b", "c"], ["d"])
        self.assertEqual(confchange.apply_change(c, "add_voter", "e"), ClusterConfig("abce", "d"))
        self.assertEqual(confchange.apply_change(c, "add_learner", "e"), ClusterConfig("abc", "de"))
        self.assertEqual(confchange.apply_change(c, "promote", "d"), ClusterConfig("abcd"))
        self.assertEqual(confchange.apply_change(c, "add_voter", "d"), ClusterConfig("abcd"))
        self.assertEqual(confchange.apply_change(c, "remove", "a"), ClusterConfig("bc", "d"))
        self.assertEqual(confchange.apply_change(c, "remove", "d"), ClusterConfig("abc"))

    def test_changes_that_make_no_sense_are_refused(self):
        c = ClusterConfig(["a"], ["d"])
        for kind, node in [("add_voter", "a"), ("add_learner", "d"), ("promote", "a"),
                           ("remove", "zz"), ("remove", "a"), ("rename", "a"),
                           ("add_voter", ""), ("add_voter", "a b"), ("add_voter", "x,y")]:
            self.assertRaises(ConfChangeError, confchange.apply_change, c, kind, node)

    def test_a_configuration_records_member_addresses_for_the_host(self):
        c = ClusterConfig("abx", addresses={"a": "10.0.0.1:1", "b": "10.0.0.2:1", "zz": "x:1", "x": ""})
        self.assertEqual(c.addresses, {"a": "10.0.0.1:1", "b": "10.0.0.2:1"})
        c = ClusterConfig("ab", addresses=c.addresses)
        c2 = confchange.apply_change(c, "add_learner", "c", "10.0.0.3:1")
        self.assertEqual(c2.addresses["c"], "10.0.0.3:1")
        self.assertEqual(confchange.decode(confchange.encode(c2)), c2)
        c3 = confchange.apply_change(c2, "remove", "a")
        self.assertNotIn("a", c3.addresses)
        self.assertRaises(ConfChangeError, confchange.apply_change, c, "add_voter", "d", "bad addr")

    def test_a_conf_entry_carries_the_whole_configuration(self):
        data = confchange.encode(ClusterConfig("ab", "c"), "add_learner", "c")
        self.assertEqual(confchange.decode(data), ClusterConfig("ab", "c"))
        self.assertEqual(confchange.describe(data), ("add_learner", "c"))
        for bad in (b"", b"[]", b'{"voters": "a"}', b'{"voters": ["a"], "learners": ["a"]}'):
            self.assertRaises(ValueError, confchange.decode, bad)

    def test_a_garbled_conf_entry_is_refused_at_the_door(self):
        from geocachedb.raft.core import check_message

        m = Message(t.APP, "b", "a", 1, entries=[Entry(1, 1, b"{nope", t.CONF)])
        self.assertRaises(ValueError, check_message, m)
        m = Message(t.APP, "b", "a", 1, entries=[Entry(1, 1, b"", 7)])
        self.assertRaises(ValueError, check_message, m)

    def test_history_falls_back_when_truncated_and_folds_what_is_applied(self):
        h = ConfHistory(ClusterConfig("abc"), 10)
        h.append([Entry(11, 1), conf_entry(12, 1, "abcd"), conf_entry(14, 2, "abcde")])
        self.assertEqual(h.latest(), (14, ClusterConfig("abcde")))
        self.assertEqual(h.at(13), ClusterConfig("abcd"))
        self.assertIsNone(h.at(9))
        h.truncate_from(13)
        self.assertEqual(h.latest(), (12, ClusterConfig("abcd")))
        h.fold_to(12)
        self.assertEqual((h.base_index, h.changes), (12, []))
        self.assertEqual(h.latest(), (12, ClusterConfig("abcd")))


class AppendTimeConfiguration(SynchronousTestCase):
    def test_the_leader_uses_a_configuration_as_soon_as_it_is_appended(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        net.isolate("b")
        net.isolate("c")
        a = net.cores["a"]
        index, err = a.propose_conf_change("remove", "c")
        self.assertIsNone(err)
        self.assertGreater(index, a.log.committed)
        self.assertEqual(a.membership, ClusterConfig("ab"))
        self.assertNotIn("c", a.peers)
        self.assertEqual(a.status()["conf_pending"], True)

    def test_a_follower_uses_a_configuration_as_soon_as_it_appends_it(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        net.drop(lambda m: m.type == t.APP_RESP)  # nothing commits
        net.cores["a"].propose_conf_change("add_learner", "d")
        net.flush("a")
        b = net.cores["b"]
        self.assertEqual(b.membership, ClusterConfig("abc", "d"))
        self.assertLess(b.log.committed, b.conf_index)

    def test_a_truncated_conf_entry_takes_its_configuration_with_it(self):
        # b holds an uncommitted CONF entry from a's term 1; c leads term 2
        # with another entry at that index: b falls back to the old config.
        logs = {"a": log_with([1]), "b": log_with([1]), "c": log_with([1])}
        net = Network(["a", "b", "c"], logs=logs)
        b = net.cores["b"]
        b.step(Message(t.APP, "b", "a", 1, log_term=1, index=1,
                       entries=[conf_entry(2, 1, "abcd")], commit=1))
        net.drain("b")
        self.assertEqual(b.membership, ClusterConfig("abcd"))
        b.step(Message(t.APP, "b", "c", 2, log_term=1, index=1,
                       entries=[Entry(2, 2), Entry(3, 2)], commit=1))
        net.drain("b")
        self.assertEqual(b.membership, ClusterConfig("abc"))
        self.assertEqual(b.log.last_index(), 3)

    def test_a_new_leader_proposes_no_change_before_committing_an_entry_of_its_term(self):
        net = Network(["a", "b", "c"])
        net.drop(lambda m: m.type == t.APP_RESP)
        net.elect("a")
        a = net.cores["a"]
        index, err = a.propose_conf_change("add_voter", "d")
        self.assertIsNone(index)
        self.assertIsInstance(err, ConfChangeBusy)
        self.assertIn("its term", str(err))
        net.hook = None
        net.tick("a")
        index, err = a.propose_conf_change("add_voter", "d")
        self.assertIsNone(err)

    def test_one_change_at_a_time(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        a = net.cores["a"]
        net.drop(lambda m: m.type == t.APP_RESP)
        self.assertIsNone(a.propose_conf_change("add_learner", "d")[1])
        index, err = a.propose_conf_change("add_learner", "e")
        self.assertIsNone(index)
        self.assertIn("in progress", str(err))
        net.hook = None
        net.tick("a")
        self.assertIsNone(a.propose_conf_change("add_learner", "e")[1])

    def test_a_follower_or_transferring_leader_proposes_no_change(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        self.assertEqual(net.cores["b"].propose_conf_change("add_voter", "d"), (None, "not leader"))
        a = net.cores["a"]
        a.lead_transferee = "b"
        self.assertEqual(a.propose_conf_change("add_voter", "d"), (None, "not leader"))

    def test_after_adding_a_voter_a_majority_of_the_new_configuration_commits(self):
        net = with_learner_d()
        a = net.cores["a"]
        self.assertIsNone(a.propose_conf_change("promote", "d")[1])
        net.flush("a")
        committed = a.log.committed
        net.isolate("c")
        net.isolate("d")
        net.propose("a")
        # a and b are 2 of 4: not a majority any more
        self.assertEqual(a.log.committed, committed)
        net.heal()
        net.tick("a")
        self.assertGreater(a.log.committed, committed)

    def test_after_removing_a_voter_a_majority_of_the_rest_commits(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        a = net.cores["a"]
        a.propose_conf_change("remove", "c")
        net.flush("a")
        net.isolate("c")
        net.isolate("b")
        before = a.log.committed
        net.propose("a")
        self.assertEqual(a.log.committed, before)  # 1 of {a, b}
        net.heal()
        net.isolate("c")
        net.tick("a")
        self.assertEqual(a.log.committed, a.log.last_index())
        self.assertNotIn("c", a.peers)


def with_learner_d(**kw):
    """{a, b, c} led by a, plus a caught-up learner d (booted knowing the
    cluster, so not blank: plain log replication)."""
    net = Network(["a", "b", "c"], **kw)
    net.elect("a")
    net.ids.append("d")
    net.cores["d"] = new_core("d", ["a", "b", "c"], **kw)
    net.applied["d"], net.read_states["d"] = [], []
    net.cores["a"].propose_conf_change("add_learner", "d")
    net.flush("a")
    net.tick("a", 2)
    return net


class AutoPromotion(SynchronousTestCase):
    def test_add_voter_of_a_new_node_adds_a_learner_and_promotes_it_once_caught_up(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        a = net.cores["a"]
        net.ids.append("d")
        net.cores["d"] = d = new_core("d", ["a", "b", "c"])
        net.applied["d"], net.read_states["d"] = [], []
        net.isolate("d")
        index, err = a.propose_conf_change("add_voter", "d")
        net.flush("a")
        self.assertIsNone(err)
        self.assertEqual(a.membership, ClusterConfig("abc", "d"))  # a learner first
        self.assertEqual(a.pending_promotions, ("d",))
        net.tick("a", 3)
        self.assertEqual(a.membership, ClusterConfig("abc", "d"))  # not caught up
        net.heal()
        net.tick("a", 3)
        self.assertEqual(a.membership, ClusterConfig("abcd"))
        self.assertEqual(a.pending_promotions, ())
        self.assertTrue(d.promotable)
        self.assertEqual(a.log.committed, a.log.last_index())

    def test_add_voter_of_a_learner_promotes_it_if_caught_up(self):
        net = with_learner_d()
        a = net.cores["a"]
        net.isolate("d")
        for _ in range(3):
            net.propose("a")
        a.config.promote_max_lag = 1
        self.assertIsInstance(a.propose_conf_change("add_voter", "d")[1], ConfChangeError)
        net.heal()
        net.tick("a")
        self.assertIsNone(a.propose_conf_change("add_voter", "d")[1])
        self.assertEqual(a.membership, ClusterConfig("abcd"))

    def test_a_new_leader_does_not_inherit_pending_promotions(self):
        net = Network(["a", "b", "c"], pre_vote=False, check_quorum=False)
        net.elect("a")
        a = net.cores["a"]
        a.propose_conf_change("add_voter", "d")  # d never answers
        net.flush("a")
        net.tick("a")
        net.campaign("b")
        self.assertEqual(a.pending_promotions, ())
        self.assertEqual(net.cores["b"].pending_promotions, ())
        self.assertEqual(net.cores["b"].membership, ClusterConfig("abc", "d"))


class Learners(SynchronousTestCase):
    def make(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        a = net.cores["a"]
        # d boots knowing the cluster (as a node restarted from an old
        # backup would), so it is not blank: plain log replication.
        d = new_core("d", ["a", "b", "c"])
        net.ids.append("d")
        net.cores["d"] = d
        net.applied["d"], net.read_states["d"] = [], []
        a.propose_conf_change("add_learner", "d")
        net.flush("a")
        net.tick("a", 2)
        return net, a, d

    def test_a_learner_receives_the_log(self):
        net, a, d = self.make()
        self.assertEqual(d.log.last_index(), a.log.last_index())
        self.assertEqual(d.membership, ClusterConfig("abc", "d"))
        self.assertEqual(a.tracker.progress["d"].match, a.log.last_index())

    def test_a_learner_neither_counts_for_commit_nor_campaigns(self):
        net, a, d = self.make()
        net.isolate("b")
        net.isolate("c")
        before = a.log.committed
        net.propose("a")
        net.tick("a")
        self.assertEqual(d.log.last_index(), a.log.last_index())
        self.assertEqual(a.log.committed, before)  # a + learner d is no majority
        for _ in range(50):
            d.tick()
        self.assertEqual(d.role, t.FOLLOWER)
        self.assertFalse(d.promotable)

    def test_a_candidate_does_not_ask_a_learner_for_its_vote(self):
        net, a, d = self.make()
        net.isolate("a")
        net.campaign("b")
        self.assertFalse(net.sent_to("d", t.PRE_VOTE) + net.sent_to("d", t.VOTE))

    def test_only_a_caught_up_learner_is_promoted(self):
        net, a, d = self.make()
        a.config.promote_max_lag = 2
        net.isolate("d")
        for _ in range(4):
            net.propose("a")
        index, err = a.propose_conf_change("promote", "d")
        self.assertIsInstance(err, ConfChangeError)
        self.assertIn("not caught up", str(err))
        a.config.promote_max_lag = 1000  # lag is fine, but d misses the change that added it
        a.tracker.progress["d"].match = a.conf_index - 1
        self.assertIsInstance(a.propose_conf_change("promote", "d")[1], ConfChangeError)
        a.config.promote_max_lag = 2
        net.heal()
        net.tick("a", 2)
        index, err = a.propose_conf_change("promote", "d")
        self.assertIsNone(err)
        net.flush("a")
        self.assertEqual(a.membership, ClusterConfig("abcd"))
        self.assertTrue(d.promotable)


class JoiningWithNothing(SynchronousTestCase):
    def test_a_blank_joiner_asks_for_a_snapshot_instead_of_the_log(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        net.propose("a")
        d = new_core("d", [])
        self.assertTrue(d.is_blank())
        net.ids.append("d")
        net.cores["d"] = d
        net.applied["d"], net.read_states["d"] = [], []
        net.cores["a"].propose_conf_change("add_learner", "d")
        net.flush("a")
        net.tick("a", 2)
        self.assertEqual(d.log.last_index(), 0)
        self.assertTrue([m for m in net.sent if m.type == t.SNAPSHOT_RESP and m.frm == "d" and m.reject])
        self.assertEqual(net.snapshot_requests["a"], ["d"])
        self.assertEqual(net.cores["a"].tracker.progress["d"].state, "snapshot")

    def test_a_blank_joiner_grants_no_votes(self):
        d = new_core("d", [])
        d.step(Message(t.VOTE, "d", "c", 7, log_term=1, index=3))
        d.step(Message(t.PRE_VOTE, "d", "b", 8, log_term=1, index=3))
        rd = d.ready()
        self.assertEqual([(m.type, m.reject) for m in rd.messages],
                         [(t.VOTE_RESP, True), (t.PRE_VOTE_RESP, True)])
        self.assertIsNone(d.vote)

    def test_a_blank_joiner_votes_only_for_logs_as_up_to_date_as_a_leader_offered_it(self):
        d = new_core("d", [], check_quorum=False)  # no lease: the vote rule alone
        d.step(Message(t.APP, "d", "a", 3, log_term=3, index=40, commit=39))
        d.ready()
        d.step(Message(t.VOTE, "d", "c", 4, log_term=2, index=90))  # stale
        d.step(Message(t.VOTE, "d", "b", 5, log_term=3, index=40))
        rd = d.ready()
        self.assertEqual([(m.to, m.reject) for m in rd.messages], [("c", True), ("b", False)])
        self.assertEqual(d.vote, "b")

    def test_a_blank_joiner_remembers_a_snapshot_it_was_offered_across_a_restart(self):
        net = ReplicaNet(["a", "b", "c"], check_quorum=False, snapshot_chunk_bytes=64)
        net.until_leader()
        net.write_many(20)
        d = net.add_node("d")
        net.hook = lambda m: not (m.type == t.SNAPSHOT and m.commit > 0)  # only chunk 0
        net.conf_change("add_learner", "d")
        net.tick(2)
        offered = net.stores["d"].incoming()
        self.assertIsNotNone(offered)
        d = net.restart("d")
        self.assertTrue(d.core.is_blank())
        d.receive(Message(t.VOTE, "d", "b", 50, log_term=offered.term, index=offered.index))
        net.hook = lambda m: False
        d.process()
        self.assertEqual(d.core.vote, "b")

    def test_a_wiped_node_re_added_under_its_old_id_cannot_elect_a_stale_candidate(self):
        # c is cut off with the first configuration {a, b, c}; a is removed,
        # wiped and added back.  c must not win with the new a's vote: the
        # old a's log (and the entries it helped commit) is gone.
        net = ReplicaNet(["a", "b", "c", "d"], pre_vote=False, check_quorum=False)
        leader = net.until_leader()
        if leader.node_id in ("a", "c"):
            net.replicas[leader.node_id].transfer_leadership("b", lambda r, e: None)
            net.deliver()
            net.tick(3)
        net.isolate("c")
        self.assertIsNone(net.conf_change("remove", "a")[0][1])
        net.write_many(10)
        net.crash("a")
        net.add_node("a")  # a new machine: empty, joining
        net.isolate("c")
        net.cut.discard(("c", "a"))
        net.cut.discard(("a", "c"))
        # c campaigns again and again: only the new a can hear it
        for _ in range(60):
            net.replicas["c"].tick()
            net.deliver()
        self.assertNotEqual(net.replicas["c"].role, t.LEADER)
        self.assertIsNone(net.replicas["a"].core.vote)


class RemovingNodes(SynchronousTestCase):
    def test_a_removed_leader_leads_until_the_change_commits_then_hands_over(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        a = net.cores["a"]
        net.drop(lambda m: m.type == t.APP_RESP)
        a.propose_conf_change("remove", "a")
        net.flush("a")
        self.assertEqual(a.role, t.LEADER)  # not committed: still leading
        self.assertFalse(a.tracker.is_voter("a"))
        self.assertIsNotNone(a.propose(b"during"))  # and still taking proposals
        net.hook = None
        net.tick("a")
        self.assertEqual(a.role, t.FOLLOWER)
        self.assertFalse(a.promotable)
        self.assertTrue(net.sent_to("b", t.TIMEOUT_NOW) or net.sent_to("c", t.TIMEOUT_NOW))
        leaders = net.leader()
        self.assertEqual(len(leaders), 1)
        self.assertIn(leaders[0], ("b", "c"))
        for _ in range(60):
            a.tick()
        self.assertEqual(a.role, t.FOLLOWER)  # a removed node never campaigns

    def test_a_node_removed_by_an_uncommitted_change_may_still_campaign_and_hand_over(self):
        # Leader b proposed its own removal and lost leadership before it
        # committed; only b holds it.  The other voters a, c cannot elect
        # anyone without b (its log is newer) or d (down): b must be able to
        # campaign, counting votes in {a, c, d}; it then commits and hands
        # over.
        net = Network(["a", "b", "c", "d"], pre_vote=False, check_quorum=False)
        net.elect("b")
        b, c = net.cores["b"], net.cores["c"]
        net.isolate("d")
        net.drop(lambda m: m.type == t.APP)
        b.propose_conf_change("remove", "b")
        net.flush("b")
        self.assertEqual(b.membership, ClusterConfig("acd"))
        self.assertTrue(b.promotable)
        net.hook = None
        net.campaign("c")  # a grants; b (newer log) does not, d is down
        self.assertNotEqual(c.role, t.LEADER)
        self.assertNotEqual(b.role, t.LEADER)  # c's term deposed it
        net.campaign("b")
        self.assertEqual(b.role, t.FOLLOWER)  # won, committed, handed over
        self.assertFalse(b.promotable)
        self.assertEqual(len([i for i in "ac" if net.cores[i].role == t.LEADER]), 1)
        self.assertGreaterEqual(c.log.committed, b.conf_index)

    def test_a_removed_leader_counts_only_the_remaining_voters(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        a = net.cores["a"]
        a.propose_conf_change("remove", "a")
        net.isolate("b")
        net.flush("a")
        # a's own copy does not count any more: c alone is 1 of {b, c}
        self.assertLess(a.log.committed, a.log.last_index())
        self.assertEqual(a.role, t.LEADER)

    def test_a_removed_nodes_vote_is_not_counted(self):
        net = Network(["a", "b", "c", "d"])
        net.elect("a")
        net.cores["a"].propose_conf_change("remove", "d")
        net.flush("a")
        net.tick("a")
        b = net.cores["b"]
        self.assertEqual(b.membership, ClusterConfig("abc"))
        b.config.pre_vote = False
        b.campaign()
        b.ready()  # its vote requests are never delivered
        b.step(Message(t.VOTE_RESP, "b", "d", b.term))  # a grant from the removed node
        self.assertEqual(b.role, t.CANDIDATE)
        b.step(Message(t.VOTE_RESP, "b", "c", b.term))
        self.assertEqual(b.role, t.LEADER)

    def test_a_removed_node_that_missed_its_removal_cannot_disrupt_the_cluster(self):
        net = ReplicaNet(["a", "b", "c", "d"])
        leader = net.until_leader()
        victim = next(i for i in net.ids if i != leader.node_id)
        net.isolate(victim)
        out = net.conf_change("remove", victim)
        self.assertIsNone(out[0][1])
        net.write_many(5)
        net.heal()
        term = leader.term
        net.tick(100)  # the removed node times out again and again
        self.assertEqual(net.leader(), leader)
        self.assertEqual(leader.term, term)
        # pre-vote never wins and never bumps its term
        self.assertNotEqual(net.replicas[victim].role, t.LEADER)
        self.assertLessEqual(net.replicas[victim].term, term)

    def test_a_voter_answers_a_candidate_its_log_does_not_list_yet(self):
        # Refusing unknown candidates could deadlock: the one node with the
        # newest log (here d, just added) may be unknown to the voters it needs.
        c = new_core("c", ["a", "b", "c"])
        c.step(Message(t.VOTE, "c", "d", 2, log_term=1, index=5))
        rd = c.ready()
        self.assertEqual([(m.type, m.to, m.reject) for m in rd.messages], [(t.VOTE_RESP, "d", False)])


class ReplicaMembership(SynchronousTestCase):
    def test_grow_three_to_five_under_writes_then_shrink_back(self):
        net = ReplicaNet(["a", "b", "c"], snapshot_entries=30, compaction_overhang=5)
        net.write_many(50)
        for new in ("d", "e"):
            net.add_node(new)
            self.assertIsNone(net.conf_change("add_learner", new)[0][1])
            net.write_many(20, new.encode())
            net.tick(3)
            self.assertIsNone(net.conf_change("promote", new)[0][1])
        leader = net.until_leader()
        self.assertEqual(leader.members(), [(i, "voter") for i in "abcde"])
        net.write_many(20, b"five")
        for gone in ("a", "b"):
            self.assertIsNone(net.conf_change("remove", gone)[0][1])
            net.tick(3)
            net.write_many(5, gone.encode() + b"-gone")
        leader = net.until_leader()
        self.assertEqual(leader.members(), [(i, "voter") for i in "cde"])
        net.tick(5)
        datas = {i: net.data(i) for i in "cde"}
        self.assertEqual(datas["c"], datas["d"])
        self.assertEqual(datas["d"], datas["e"])
        # d and e joined after compaction: they got snapshots
        self.assertGreaterEqual(net.stores["d"].finished + net.stores["e"].finished, 1)

    def test_add_voter_answers_once_the_new_node_is_promoted(self):
        net = ReplicaNet(["a", "b", "c"], snapshot_chunk_bytes=64)
        net.write_many(30)
        net.add_node("d")
        out = net.conf_change("add_voter", "d")
        net.tick(5)
        self.assertEqual(out, [([(i, "voter") for i in "abcd"], None)])
        self.assertEqual(net.stores["d"].finished, 1)  # it joined from a snapshot

    def test_add_voter_fails_when_the_leader_goes_before_the_promotion(self):
        net = ReplicaNet(["a", "b", "c"])
        leader = net.until_leader()
        net.add_node("d")
        net.isolate("d")
        out = []
        leader.propose_conf_change("add_voter", "d", lambda r, e: out.append(e))
        net.tick(3)
        self.assertEqual(out, [])
        net.isolate(leader.node_id)
        net.tick(40)
        self.assertEqual(len(out), 1)
        self.assertIsInstance(out[0], errors.Unavailable)

    def test_add_voter_of_an_unreachable_node_times_out_and_leaves_a_learner(self):
        net = ReplicaNet(["a", "b", "c"])
        leader = net.until_leader()
        out = []
        leader.propose_conf_change("add_voter", "d", lambda r, e: out.append(e))
        net.tick(leader.promote_timeout_ticks + 1)
        self.assertIsInstance(out[0], errors.Unavailable)
        self.assertIn(("d", "learner"), leader.members())

    def test_the_configuration_survives_restarts_from_the_log_and_from_the_state_machine(self):
        net = ReplicaNet(["a", "b", "c"], snapshot_entries=10, compaction_overhang=2)
        net.until_leader()
        net.add_node("d")
        net.conf_change("add_learner", "d")
        for node_id in ["a", "b", "c", "d"]:
            net.logs[node_id].sync()
            r = net.restart(node_id)
            self.assertEqual(r.members(), [("a", "voter"), ("b", "voter"), ("c", "voter"),
                                           ("d", "learner")], node_id)
        # now compact the CONF entry away: the state machine remembers it
        net.until_leader()
        net.write_many(40)
        for node_id in ["a", "b", "c", "d"]:
            self.assertGreater(net.logs[node_id].first_index(), 5)
            net.logs[node_id].sync()
            r = net.restart(node_id)
            self.assertIn(("d", "learner"), r.members())

    def test_a_joining_node_with_no_configuration_waits_to_hear_from_the_leader(self):
        net = ReplicaNet(["a", "b", "c"])
        net.until_leader()
        d = net.add_node("d")
        self.assertEqual((d.members(), d.is_member), ([], False))
        for _ in range(50):
            d.tick()
        self.assertEqual(d.role, t.FOLLOWER)
        self.assertEqual(d.term, 0)
        net.conf_change("add_voter", "d")
        net.tick(3)
        self.assertTrue(d.is_member)
        self.assertEqual(d.members(), [(i, "voter") for i in "abcd"])

    def test_callback_outcomes(self):
        net = ReplicaNet(["a", "b", "c"])
        leader = net.until_leader()
        follower = next(r for r in net.replicas.values() if r is not leader)
        out = net.conf_change("add_voter", "d", via=follower)
        self.assertIsInstance(out[0][1], errors.NotLeader)
        self.assertEqual(out[0][1].leader_id, leader.node_id)
        out = net.conf_change("promote", "a", via=leader)
        self.assertIsInstance(out[0][1], errors.InvalidArgument)
        got = []
        net.isolate(leader.node_id)
        leader.propose_conf_change("add_learner", "x", lambda r, e: got.append((r, e)))
        leader.propose_conf_change("add_learner", "y", lambda r, e: got.append((r, e)))
        net.deliver()
        self.assertIsInstance(got[0][1], errors.Unavailable)  # y: x in progress
        net.tick(40)  # the isolated leader steps down (check quorum)
        self.assertIsInstance(got[1][1], errors.Unavailable)
        self.assertIn("leadership lost", str(got[1][1]))

    def test_addresses_travel_with_the_configuration(self):
        net = ReplicaNet(["a", "b", "c"])
        net.until_leader()
        net.add_node("d")
        leader = net.until_leader()
        out = []
        leader.propose_conf_change("add_learner", "d", lambda r, e: out.append(e), address="h4:5004")
        net.deliver()
        net.tick(2)
        self.assertEqual(out, [None])
        for r in net.replicas.values():
            self.assertEqual(r.addresses(), {"d": "h4:5004"})

    def test_status_reports_the_configuration(self):
        net = ReplicaNet(["a", "b", "c"])
        leader = net.until_leader()
        net.conf_change("add_learner", "d")
        s = leader.status()
        self.assertEqual((s["voters"], s["learners"], s["conf_pending"]), (["a", "b", "c"], ["d"], False))
        self.assertEqual(s["peers"]["d"]["role"], "learner")
        self.assertEqual(s["conf_index"], leader.commit_index)
