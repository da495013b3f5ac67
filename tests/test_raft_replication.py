"""Log replication (Raft §5.3): log matching, conflict repair with fast
backtracking, batching, pipelining, heartbeats, and the commit rule (§5.4.2,
Figure 8)."""

from twisted.trial.unittest import SynchronousTestCase

from geocachedb.raft.progress import PROBE, REPLICATE, SNAPSHOT
from tests.raft_helpers import Entry, HardState, Message, Network, drain, log_with, new_core, t

LEADER_LOG = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]  # Figure 7 of the Raft paper

FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


def terms(core):
    log = core.log
    return [log.term(i) for i in range(1, log.last_index() + 1)]


class ConflictRepairTests(SynchronousTestCase):
    def test_leader_repairs_every_figure_7_follower_with_fast_backtracking(self):
        for case, follower_log in sorted(FIGURE_7_FOLLOWERS.items()):
            net = Network(["ldr", "fol", "peer"], logs={
                "ldr": log_with(LEADER_LOG, HardState(8, None, 0)),
                "fol": log_with(follower_log, HardState(max(follower_log), None, 0)),
                "peer": log_with(LEADER_LOG, HardState(8, None, 0)),
            })
            net.elect("ldr")
            rejects = [m for m in net.delivered
                       if m.type == t.APP_RESP and m.frm == "fol" and m.reject]
            # One index per round trip would need up to 7 rejections (case f).
            self.assertLessEqual(len(rejects), 2, case)
            self.assertEqual(terms(net.cores["fol"]), LEADER_LOG + [9], case)
            self.assertEqual(net.cores["fol"].log.storage.last_index(), 11, case)

    def test_follower_rejects_append_with_mismatched_prev_term_and_hints_conflict(self):
        core = new_core("f", ["l", "f", "x"], log_with([1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
                                                      HardState(3, None, 0)))
        core.step(Message(t.APP, "f", "l", 8, log_term=6, index=10))
        [resp] = drain(core)
        self.assertTrue(resp.reject)
        self.assertEqual(resp.index, 10)
        # index 10 has term 3 <= 6: it may match an entry of term <= 3
        self.assertEqual((resp.reject_hint, resp.hint_term), (10, 3))

    def test_follower_hint_skips_entries_of_terms_above_the_leaders(self):
        core = new_core("f", ["l", "f", "x"], log_with([1, 1, 5, 5, 5], HardState(5, None, 0)))
        core.step(Message(t.APP, "f", "l", 6, log_term=4, index=5))
        [resp] = drain(core)
        self.assertEqual((resp.reject_hint, resp.hint_term), (2, 1))

    def test_follower_truncates_conflicting_suffix_and_appends(self):
        core = new_core("f", ["l", "f", "x"], log_with([1, 1, 1], HardState(1, None, 0)))
        core.step(Message(t.APP, "f", "l", 2, log_term=1, index=1,
                          entries=[Entry(2, 2, b"new")], commit=1))
        rd = core.ready()
        self.assertEqual([(e.index, e.term) for e in rd.entries], [(2, 2)])
        # before the host persists, the core already sees the new suffix
        self.assertEqual(terms(core), [1, 2])
        core.log.storage.append(rd.entries)
        core.log.storage.sync()
        core.advance(rd)
        self.assertEqual(core.log.storage.last_index(), 2)
        self.assertEqual(core.log.storage.term(2), 2)
        self.assertEqual(core.log.committed, 1)

    def test_follower_keeps_matching_entries_and_ignores_stale_shorter_append(self):
        core = new_core("f", ["l", "f", "x"], log_with([1, 1, 1], HardState(1, None, 0)))
        core.step(Message(t.APP, "f", "l", 1, log_term=1, index=1, entries=[Entry(2, 1, b"e2")]))
        rd = core.ready()
        self.assertEqual(rd.entries, [])  # nothing to persist: the entry is already there
        self.assertEqual(rd.messages[0].index, 2)
        self.assertEqual(core.log.last_index(), 3)

    def test_follower_commit_is_min_of_leader_commit_and_last_new_entry(self):
        core = new_core("f", ["l", "f", "x"], log_with([1, 1, 1, 1], HardState(1, None, 0)))
        core.step(Message(t.APP, "f", "l", 1, log_term=1, index=1, entries=[Entry(2, 1, b"e2")],
                          commit=4))
        # entries 3 and 4 are not vouched for by this message
        self.assertEqual(core.log.committed, 2)

    def test_leader_never_overwrites_its_own_log(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        before = terms(a)
        net.send(Message(t.APP, "a", "b", a.term, log_term=0, index=0,
                         entries=[Entry(1, a.term, b"x")]))
        self.assertEqual(terms(a), before)


class CommitRuleTests(SynchronousTestCase):
    def _leader_with_old_term_entry(self):
        # a holds an entry of term 2 at index 2; it becomes leader of term 3
        a = new_core("a", ["a", "b", "c"], log_with([1, 2], HardState(2, None, 1)), pre_vote=False)
        a.campaign()
        drain(a)
        a.step(Message(t.VOTE_RESP, "a", "b", 3))
        drain(a)  # persists the empty entry of term 3 at index 3
        self.assertEqual((a.role, a.log.last_index()), (t.LEADER, 3))
        return a

    def test_leader_does_not_commit_an_old_term_entry_by_counting_replicas(self):
        # Figure 8: entry 2 (term 2) on a majority is still not committed
        a = self._leader_with_old_term_entry()
        a.step(Message(t.APP_RESP, "a", "b", 3, index=2))
        drain(a)
        self.assertEqual(a.log.committed, 1)

    def test_old_term_entries_commit_with_the_first_entry_of_the_new_term(self):
        a = self._leader_with_old_term_entry()
        a.step(Message(t.APP_RESP, "a", "b", 3, index=3))
        drain(a)
        self.assertEqual(a.log.committed, 3)

    def test_figure_8_old_term_entry_on_a_majority_is_not_committed_and_may_be_overwritten(self):
        # Figure 8 (c)-(d): s1 (leader of term 4) replicates 2@2 to a
        # majority but its own term-4 entry reaches nobody; 2@2 must not be
        # committed, because s5 (holding 3@2) can still win and overwrite it.
        ids = ["s1", "s2", "s3", "s4", "s5"]
        logs = {
            "s1": log_with([1, 2], HardState(3, None, 1)),
            "s2": log_with([1, 2], HardState(2, "s1", 1)),
            "s3": log_with([1], HardState(2, None, 1)),
            "s4": log_with([1], HardState(2, None, 1)),
            "s5": log_with([1, 3], HardState(3, "s5", 1)),
        }
        net = Network(ids, logs=logs, pre_vote=False, check_quorum=False)
        net.isolate("s4")
        net.isolate("s5")

        def strip_term_4(m):
            if m.type == t.APP and m.frm == "s1":
                m.entries = [e for e in m.entries if e.term != 4]
            return True

        net.hook = strip_term_4
        s1 = net.elect("s1")
        self.assertEqual(s1.term, 4)
        self.assertEqual([net.cores[i].log.term(2) for i in ("s1", "s2", "s3")], [2, 2, 2])
        self.assertEqual(s1.log.committed, 1)
        # s1 crashes; s5 wins with s2, s3, s4 and overwrites index 2.
        net.heal()
        net.hook = None
        net.isolate("s1")
        for _ in range(3):
            net.campaign("s5")
            if net.cores["s5"].role == t.LEADER:
                break
        self.assertEqual(net.cores["s5"].role, t.LEADER)
        for node_id in ("s2", "s3", "s4", "s5"):
            self.assertEqual(net.cores[node_id].log.term(2), 3, node_id)
        applied_2 = {e.term for node_id in ids for e in net.applied[node_id] if e.index == 2}
        self.assertEqual(applied_2, {3})


class FlowControlTests(SynchronousTestCase):
    def _elected(self, **kw):
        net = Network(["a", "b", "c"], **kw)
        net.elect("a")
        return net

    def test_entries_are_batched_up_to_max_msg_bytes(self):
        net = self._elected(max_msg_bytes=10)
        sizes = []
        net.hook = lambda m: sizes.append(len(m.entries)) if m.type == t.APP and m.to == "b" else None
        a = net.cores["a"]
        for i in range(5):
            a.propose(b"1234")
        net.flush("a")
        # 5 entries of 4 bytes, at most 10 bytes per message: 2 + 2 + 1
        self.assertEqual([s for s in sizes if s], [2, 2, 1])
        self.assertEqual(net.cores["b"].log.last_index(), a.log.last_index())

    def test_proposals_of_one_turn_share_one_append_per_follower(self):
        net = self._elected()
        apps = []
        net.hook = lambda m: apps.append(m) if m.type == t.APP and m.entries else None
        a = net.cores["a"]
        for i in range(20):
            a.propose(b"x")
        net.flush("a")
        self.assertEqual(sorted(m.to for m in apps), ["b", "c"])
        self.assertEqual(len(apps[0].entries), 20)

    def test_full_messages_stream_up_to_max_inflight_without_waiting(self):
        # One entry fills a message: a follower catching up gets a stream.
        net = self._elected(max_inflight=3, max_msg_bytes=1)
        a = net.cores["a"]
        pr = a.tracker.progress["b"]
        self.assertEqual(pr.state, REPLICATE)
        held = net.hold(lambda m: m.to == "b" and m.type == t.APP)
        for i in range(5):
            a.propose(b"x")
        net.flush("a")
        # optimistic next-index advance, bounded window
        self.assertEqual([len(m.entries) for m in held], [1, 1, 1])
        self.assertTrue(pr.inflights.full())
        self.assertEqual(pr.next, held[-1].entries[-1].index + 1)
        # acks free the window and the rest is sent
        net.hook = None
        net.send(*held)
        self.assertEqual(net.cores["b"].log.last_index(), a.log.last_index())
        self.assertEqual(pr.inflights.count(), 0)

    def test_the_tail_waits_for_the_answer_in_flight_then_goes_in_one_message(self):
        net = self._elected()
        a = net.cores["a"]
        held = net.hold(lambda m: m.to == "b" and m.type == t.APP)
        for i in range(4):
            a.propose(b"x")
            net.flush("a")
        # Four leader turns, one message: the other three entries wait.
        self.assertEqual([len(m.entries) for m in held], [1])
        net.hook = None
        sent = len(net.sent)
        net.send(*held)  # b answers it
        to_b = [m for m in net.sent[sent:] if m.to == "b" and m.type == t.APP and m not in held]
        self.assertEqual([len(m.entries) for m in to_b], [3])
        self.assertEqual(to_b[0].entries[-1].index, a.log.last_index())

    def test_a_follower_is_sent_a_commit_made_while_its_answer_was_due(self):
        net = self._elected()
        a = net.cores["a"]
        answers = net.hold(lambda m: m.frm == "b" and m.type == t.APP_RESP)
        a.propose(b"x")
        net.flush("a")  # c's answer commits; b's is held
        self.assertEqual(a.log.committed, a.log.last_index())
        self.assertLess(net.cores["b"].log.committed, a.log.committed)
        net.hook = None
        net.send(*answers)  # no new entries: an empty append carries the commit
        self.assertEqual(net.cores["b"].log.committed, a.log.committed)

    def test_follower_goes_back_to_probe_after_a_rejection(self):
        net = self._elected()
        a = net.cores["a"]
        pr = a.tracker.progress["b"]
        net.drop(lambda m: m.to == "b" and m.type == t.APP)
        a.propose(b"lost")
        net.flush("a")
        net.hook = None
        a.propose(b"x")
        net.flush("a")  # waits for the lost message's answer
        states = []
        net.hook = lambda m: states.append(pr.state) if m.type == t.APP_RESP and m.reject else None
        # The heartbeat answer without an append answer since the tick:
        # an empty append at next probes the window, and b rejects it.
        net.tick("a")
        self.assertEqual(states, [REPLICATE])
        self.assertEqual(net.cores["b"].log.last_index(), a.log.last_index())

    def test_probe_state_sends_one_append_at_a_time(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        pr = a.tracker.progress["b"]
        pr.become_probe()
        sent = net.hold(lambda m: m.to == "b")
        for i in range(3):
            a.propose(b"x")
            net.flush("a")
        self.assertEqual(len(sent), 1)
        self.assertEqual(pr.state, PROBE)
        self.assertTrue(pr.probe_sent)

    def test_heartbeat_answer_resumes_a_window_whose_appends_were_all_lost(self):
        for max_msg_bytes in (1, 1 << 20):  # a full window; one held tail
            net = self._elected(max_inflight=2, max_msg_bytes=max_msg_bytes)
            a = net.cores["a"]
            net.drop(lambda m: m.to == "b" and m.type == t.APP)
            for i in range(3):
                a.propose(b"x")
            net.flush("a")
            pr = a.tracker.progress["b"]
            self.assertTrue(pr.inflights.count())
            self.assertEqual(pr.inflights.full(), max_msg_bytes == 1)
            net.hook = None
            net.flush("a")
            self.assertLess(net.cores["b"].log.last_index(), a.log.last_index())
            net.tick("a")  # heartbeat -> answer -> empty probe at next -> reject -> repair
            self.assertEqual(net.cores["b"].log.last_index(), a.log.last_index())

    def test_a_lost_answer_is_settled_by_the_window_probe(self):
        # b has the entries; only its answers were lost.  The probe's answer
        # frees the window, and the held tail follows at once.
        net = self._elected()
        a, b = net.cores["a"], net.cores["b"]
        net.drop(lambda m: m.frm == "b" and m.type == t.APP_RESP)
        a.propose(b"1")
        net.flush("a")
        a.propose(b"2")
        net.flush("a")  # held: the answer to the first never comes
        self.assertLess(b.log.last_index(), a.log.last_index())
        net.hook = None
        net.tick("a")
        self.assertEqual(b.log.last_index(), a.log.last_index())
        self.assertEqual(a.tracker.progress["b"].inflights.count(), 0)
        self.assertEqual(b.log.committed, a.log.committed)

    def test_a_window_compacted_away_while_waiting_ends_in_a_snapshot(self):
        net = self._elected()
        a = net.cores["a"]
        pr = a.tracker.progress["b"]
        net.drop(lambda m: m.to == "b" and m.type == t.APP)
        for i in range(5):
            a.propose(b"x%d" % i)
            net.flush("a")
        index = a.log.committed
        a.log.storage.compact(index, a.log.term(index))
        self.assertIsNone(a.log.term(pr.next - 1))
        net.hook = None
        a.propose(b"more")
        net.flush("a")  # still waiting: no snapshot for a peer whose answer is due
        self.assertEqual(pr.state, REPLICATE)
        self.assertNotIn("b", net.snapshot_requests.get("a", []))
        net.tick("a")  # the probe is rejected -> probe -> compacted -> snapshot
        self.assertEqual(pr.state, SNAPSHOT)
        self.assertIn("b", net.snapshot_requests.get("a", []))

    def test_at_most_one_window_probe_per_heartbeat_tick(self):
        net = self._elected()
        a = net.cores["a"]
        net.drop(lambda m: m.to == "b" and m.type == t.APP)
        a.propose(b"x")
        net.flush("a")
        net.sent.clear()
        net.tick("a")  # the probe is dropped too
        for i in range(3):  # read rounds: more heartbeat answers, no probes
            net.read_index("a", b"r%d" % i)
        probes = [m for m in net.sent if m.type == t.APP and m.to == "b"]
        self.assertEqual(len(probes), 1)
        self.assertEqual(probes[0].entries, [])

    def test_heartbeat_carries_min_of_match_and_commit(self):
        net = self._elected()
        a = net.cores["a"]
        net.isolate("c")
        a.propose(b"x")
        net.flush("a")
        self.assertEqual(a.log.committed, a.log.last_index())
        net.sent.clear()
        net.tick("a")
        commits = {m.to: m.commit for m in net.sent if m.type == t.HEARTBEAT}
        self.assertEqual(commits["b"], a.log.committed)
        self.assertEqual(commits["c"], a.tracker.progress["c"].match)
        self.assertLess(commits["c"], a.log.committed)

    def test_followers_learn_commit_index_from_the_next_append(self):
        net = self._elected()
        a = net.cores["a"]
        a.propose(b"x")
        net.flush("a")
        for node_id in ("b", "c"):
            self.assertEqual(net.cores[node_id].log.committed, a.log.committed)

    def test_caught_up_follower_in_probe_returns_to_replicate_on_empty_probe_answer(self):
        net = self._elected()
        a = net.cores["a"]
        pr = a.tracker.progress["b"]
        pr.become_probe()  # e.g. after a stale rejection
        self.assertEqual(pr.match, a.log.last_index())
        net.tick("a")  # heartbeat answer -> empty probe -> acknowledged at match
        self.assertEqual(pr.state, REPLICATE)
        # and new entries flow without waiting for a heartbeat
        a.propose(b"x")
        net.flush("a")
        self.assertEqual(net.cores["b"].log.last_index(), a.log.last_index())

    def test_acknowledgement_beyond_the_leaders_log_is_ignored(self):
        net = self._elected()
        a = net.cores["a"]
        a.step(Message(t.APP_RESP, "a", "b", a.term, index=a.log.last_index() + 5))
        self.assertLessEqual(a.tracker.progress["b"].match, a.log.last_index())
