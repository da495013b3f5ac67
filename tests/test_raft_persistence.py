"""The persistence contract (DESIGN.md invariant 4) and restart from what
was persisted, plus the in-memory IRaftLog used by tests and the simulator."""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from geocachedb.interfaces import IRaftLog
from geocachedb.raft.memlog import MemoryRaftLog
from tests.raft_helpers import Entry, HardState, Message, Network, drain, log_with, new_core, t


class ReadyContractTests(SynchronousTestCase):
    def test_candidate_persists_term_and_vote_before_requesting_votes(self):
        core = new_core("a", ["a", "b", "c"], pre_vote=False)
        core.campaign()
        rd = core.ready()
        self.assertEqual(rd.hard_state, HardState(1, "a", 0))
        self.assertTrue(rd.must_sync)
        self.assertEqual(rd.messages_before_sync, [])
        self.assertEqual(sorted(m.to for m in rd.messages), ["b", "c"])

    def test_follower_acknowledges_entries_only_after_the_sync(self):
        core = new_core("b", ["a", "b", "c"], log_with([1], HardState(1, None, 0)))
        core.step(Message(t.APP, "b", "a", 1, log_term=1, index=1, entries=[Entry(2, 1, b"x")]))
        rd = core.ready()
        self.assertEqual([e.index for e in rd.entries], [2])
        self.assertTrue(rd.must_sync)
        self.assertEqual(rd.messages_before_sync, [])
        self.assertEqual([(m.type, m.index) for m in rd.messages], [(t.APP_RESP, 2)])

    def test_leader_sends_appends_before_its_own_sync_but_counts_itself_after(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        committed = a.log.committed
        a.propose(b"x")
        rd = a.ready()
        self.assertEqual({m.type for m in rd.messages_before_sync}, {t.APP})
        self.assertTrue(rd.must_sync)
        index = rd.entries[-1].index
        # one follower acknowledges before the leader's own sync: no quorum yet
        a.step(Message(t.APP_RESP, "a", "b", a.term, index=index))
        self.assertEqual(a.log.committed, committed)
        a.log.storage.append(rd.entries)
        a.log.storage.sync()
        a.advance(rd)
        self.assertEqual(a.log.committed, index)

    def test_commit_only_change_is_recorded_but_not_synced(self):
        core = new_core("b", ["a", "b", "c"], log_with([1, 1], HardState(1, None, 0)))
        core.step(Message(t.HEARTBEAT, "b", "a", 1, commit=2))
        rd = core.ready()
        self.assertEqual(rd.hard_state, HardState(1, None, 2))
        self.assertFalse(rd.must_sync)

    def test_ready_hands_out_entries_and_committed_entries_once(self):
        core = new_core("solo", ["solo"])
        core.tick()
        rd = core.ready()
        self.assertEqual([e.index for e in rd.entries], [1])
        self.assertFalse(core.has_ready() and core.ready().entries)

    def test_messages_after_a_term_change_all_wait_for_the_sync(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        b = net.cores["b"]
        # a higher-term append: b changes term and acks in one Ready
        b.step(Message(t.APP, "b", "c", 7, log_term=1, index=1))
        rd = b.ready()
        self.assertEqual(rd.messages_before_sync, [])
        self.assertTrue(rd.must_sync)
        self.assertEqual(rd.hard_state.term, 7)


class RestartTests(SynchronousTestCase):
    def test_restarted_node_remembers_its_vote(self):
        log = MemoryRaftLog()
        core = new_core("b", ["a", "b", "c"], log)
        core.step(Message(t.VOTE, "b", "a", 1))
        drain(core)
        restarted = new_core("b", ["a", "b", "c"], log)
        self.assertEqual((restarted.term, restarted.vote), (1, "a"))
        restarted.step(Message(t.VOTE, "b", "c", 1))
        [resp] = drain(restarted)
        self.assertTrue(resp.reject)

    def test_vote_lost_with_unsynced_write_was_never_sent(self):
        log = MemoryRaftLog()
        core = new_core("b", ["a", "b", "c"], log)
        core.step(Message(t.VOTE, "b", "a", 1))
        rd = core.ready()
        log.set_hard_state(rd.hard_state)  # written but the node crashes before sync
        log.lose_unsynced()
        restarted = new_core("b", ["a", "b", "c"], log)
        self.assertEqual((restarted.term, restarted.vote), (0, None))

    def test_restarted_node_keeps_its_log_and_commit_and_starts_as_follower(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        for i in range(3):
            net.propose("a", b"x%d" % i)
        log = a.log.storage
        restarted = new_core("a", ["a", "b", "c"], log, applied=2)
        self.assertEqual(restarted.role, t.FOLLOWER)
        self.assertIsNone(restarted.lead)
        self.assertEqual(restarted.term, a.term)
        self.assertEqual(restarted.log.last_index(), a.log.last_index())
        self.assertEqual(restarted.log.committed, a.log.committed)
        rd = restarted.ready()
        self.assertEqual([e.index for e in rd.committed_entries], [3, 4])

    def test_restarted_cluster_elects_a_leader_and_keeps_committed_entries(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        for i in range(3):
            net.propose("a", b"x%d" % i)
        logs = {i: net.cores[i].log.storage for i in net.ids}
        committed = net.cores["a"].log.committed
        again = Network(["a", "b", "c"], logs=logs)
        again.campaign("c")
        leader = again.cores[again.leader()[0]]
        self.assertGreaterEqual(leader.log.committed, committed)
        self.assertEqual([e.data for e in again.applied["c"] if e.data], [b"x0", b"x1", b"x2"])


class MemoryRaftLogTests(SynchronousTestCase):
    def test_provides_iraftlog(self):
        verifyObject(IRaftLog, MemoryRaftLog())

    def test_empty_log_index_arithmetic(self):
        log = MemoryRaftLog()
        self.assertEqual((log.first_index(), log.last_index(), log.term(0)), (1, 0, 0))
        self.assertRaises(IndexError, log.term, 1)

    def test_append_truncates_conflicting_suffix(self):
        log = log_with([1, 1, 1])
        log.append([Entry(2, 2, b"n")])
        self.assertEqual((log.last_index(), log.term(2)), (2, 2))

    def test_entries_respects_max_bytes_but_returns_at_least_one(self):
        log = MemoryRaftLog()
        log.append([Entry(i, 1, b"1234") for i in range(1, 6)])
        self.assertEqual(len(log.entries(1, 6, max_bytes=9)), 2)
        self.assertEqual(len(log.entries(1, 6, max_bytes=1)), 1)

    def test_lose_unsynced_drops_writes_after_the_last_sync(self):
        log = MemoryRaftLog()
        log.append([Entry(1, 1), Entry(2, 1)])
        log.set_hard_state(HardState(1, "a", 1))
        log.sync()
        log.append([Entry(2, 2), Entry(3, 2)])
        log.set_hard_state(HardState(2, "b", 1))
        self.assertEqual(log.unsynced_writes(), 2)
        log.lose_unsynced()
        self.assertEqual((log.last_index(), log.term(2)), (2, 1))
        self.assertEqual(log.hard_state(), HardState(1, "a", 1))

    def test_compact_keeps_the_term_of_the_compaction_point(self):
        log = log_with([1, 2, 3])
        log.compact(2, 2)
        self.assertEqual((log.first_index(), log.last_index(), log.term(2)), (3, 3, 2))
        self.assertRaises(IndexError, log.term, 1)
        log.sync()
        log.lose_unsynced()
        self.assertEqual(log.first_index(), 3)

    def test_reset_starts_empty_after_the_snapshot_point(self):
        log = log_with([1, 2, 3])
        log.reset(10, 4)
        self.assertEqual((log.first_index(), log.last_index(), log.term(10)), (11, 10, 4))
