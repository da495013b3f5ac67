"""The host loop (`geocachedb.server.replica.Replica`): group commit, persistence
before send, apply + callbacks, reads, restart from what was persisted."""

import random

from twisted.trial.unittest import SynchronousTestCase

from geocachedb import errors
from geocachedb.raft import types as t
from geocachedb.raft.memlog import MemoryRaftLog
from geocachedb.raft.types import RaftConfig
from geocachedb.server.replica import Replica
from geocachedb.statemachine import KVStateMachine, encode_put
from geocachedb.storage.memory import MemoryStorage
from tests.raft_helpers import stored_value


class RecordingLog(MemoryRaftLog):
    """Records every call so tests can check the order of persistence."""

    def __init__(self, events):
        super().__init__()
        self.events = events

    def append(self, entries):
        self.events.append(("append", [e.index for e in entries]))
        super().append(entries)

    def set_hard_state(self, hs):
        self.events.append(("hard_state", hs))
        super().set_hard_state(hs)

    def sync(self):
        self.events.append(("sync",))
        super().sync()


class Wire:
    """A transport that queues messages for a `Cluster` to deliver."""

    def __init__(self, events=None):
        self.queue = []
        self.events = events

    def send(self, message):
        if self.events is not None:
            self.events.append(("send", message.type, message.to))
        self.queue.append(message)


class Cluster:
    def __init__(self, ids, seed=1, **cfg):
        self.ids = list(ids)
        self.wire = Wire()
        self.cut = set()
        self.logs = {}
        self.storages = {}
        self.replicas = {}
        self.config = RaftConfig(**cfg)
        self.seed = seed
        for node_id in self.ids:
            self.logs[node_id] = MemoryRaftLog()
            self.storages[node_id] = MemoryStorage()
            self.start(node_id)

    def start(self, node_id):
        self.replicas[node_id] = Replica(
            node_id, self.ids, self.logs[node_id], self.wire,
            KVStateMachine(self.storages[node_id]),
            random.Random("%s-%s" % (self.seed, node_id)), self.config)
        return self.replicas[node_id]

    def deliver(self):
        for _ in range(10000):
            if not self.wire.queue:
                return
            queue, self.wire.queue = self.wire.queue, []
            for m in queue:
                if (m.frm, m.to) in self.cut or m.to not in self.replicas:
                    continue
                self.replicas[m.to].receive(m)
            for r in self.replicas.values():
                r.process()

    def tick(self, n=1):
        for _ in range(n):
            for r in self.replicas.values():
                r.tick()
                r.process()
            self.deliver()

    def leader(self):
        leaders = [r for r in self.replicas.values() if r.role == t.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    def until_leader(self, max_ticks=100):
        for _ in range(max_ticks):
            self.tick()
            if self.leader() is not None:
                return self.leader()
        raise AssertionError("no leader")


def recorder():
    out = []
    return out, lambda result, error: out.append((result, error))


class SingleNodeReplicaTests(SynchronousTestCase):
    def make(self, log=None, storage=None):
        self.log = log or MemoryRaftLog()
        self.storage = storage or MemoryStorage()
        return Replica("n1", ["n1"], self.log, Wire(), KVStateMachine(self.storage),
                       random.Random(7))

    def test_single_node_is_leader_after_first_tick(self):
        r = self.make()
        r.tick()
        r.process()
        self.assertEqual(r.role, "leader")
        self.assertEqual(r.leader_id, "n1")
        self.assertEqual(r.commit_index, 1)
        self.assertEqual(r.applied_index, 1)

    def test_proposals_of_one_turn_share_one_sync_and_one_apply_batch(self):
        r = self.make()
        r.tick()
        r.process()
        syncs = self.log.sync_count
        out, cb = recorder()
        for i in range(50):
            r.propose(encode_put(b"k%d" % i, b"v"), cb)
        r.process()
        self.assertEqual(self.log.sync_count - syncs, 1)
        self.assertEqual(len(out), 50)
        self.assertEqual([res.index for res, err in out], list(range(2, 52)))
        self.assertEqual(stored_value(self.storage, b"k49"), b"v")

    def test_read_barrier_on_single_node_completes_after_process(self):
        r = self.make()
        r.tick()
        r.process()
        out, cb = recorder()
        r.read_barrier(cb)
        r.process()
        self.assertEqual(out, [(None, None)])

    def test_restart_restores_term_vote_commit_and_does_not_reapply(self):
        r = self.make()
        r.tick()
        r.process()
        out, cb = recorder()
        r.propose(encode_put(b"k", b"v1"), cb)
        r.process()
        applied = r.applied_index
        self.log.lose_unsynced()
        r2 = self.make(self.log, self.storage)
        self.assertEqual(r2.term, 1)
        self.assertEqual(r2.applied_index, applied)
        self.assertEqual(r2.commit_index, applied)
        r2.tick()
        r2.process()
        self.assertEqual((r2.role, r2.term), ("leader", 2))
        out2, cb2 = recorder()
        r2.propose(encode_put(b"k", b"v2"), cb2)
        r2.process()
        # the new term's empty entry is applied+1, the write lands after it
        self.assertEqual([(res.index, err) for res, err in out2], [(applied + 2, None)])
        self.assertEqual(stored_value(self.storage, b"k"), b"v2")

    def test_restart_applies_committed_but_unapplied_entries(self):
        r = self.make()
        r.tick()
        r.process()
        r.propose(encode_put(b"k", b"v"), lambda *a: None)
        r.process()
        fresh = MemoryStorage()  # state machine lost everything (e.g. new disk)
        r2 = self.make(self.log, fresh)
        r2.process()
        self.assertEqual(stored_value(fresh, b"k"), b"v")
        self.assertEqual(r2.applied_index, 2)


class ClusterReplicaTests(SynchronousTestCase):
    def test_three_replicas_elect_a_leader_and_replicate_a_write(self):
        c = Cluster(["a", "b", "c"])
        leader = c.until_leader()
        out, cb = recorder()
        leader.propose(encode_put(b"k", b"v"), cb)
        leader.process()
        c.deliver()
        self.assertEqual(len(out), 1)
        self.assertIsNone(out[0][1])
        c.tick()  # followers learn the commit index
        for node_id in c.ids:
            self.assertEqual(stored_value(c.storages[node_id], b"k"), b"v", node_id)

    def test_proposal_on_follower_is_refused_with_leader_hint(self):
        c = Cluster(["a", "b", "c"])
        leader = c.until_leader()
        follower = next(r for r in c.replicas.values() if r is not leader)
        out, cb = recorder()
        follower.propose(encode_put(b"k", b"v"), cb)
        self.assertEqual(len(out), 1)
        self.assertIsInstance(out[0][1], errors.NotLeader)
        self.assertEqual(out[0][1].leader_id, leader.node_id)

    def test_read_barrier_on_follower_asks_leader_and_waits_for_apply(self):
        c = Cluster(["a", "b", "c"])
        leader = c.until_leader()
        follower = next(r for r in c.replicas.values() if r is not leader)
        leader.propose(encode_put(b"k", b"v"), lambda *a: None)
        leader.process()
        c.deliver()
        out, cb = recorder()
        follower.read_barrier(cb)
        follower.process()
        c.deliver()
        c.tick()
        self.assertEqual(out, [(None, None)])
        self.assertEqual(stored_value(c.storages[follower.node_id], b"k"), b"v")

    def test_messages_for_another_node_and_garbage_are_dropped(self):
        c = Cluster(["a", "b", "c"])
        r = c.replicas["a"]
        self.assertFalse(r.receive(t.Message(t.HEARTBEAT, "b", "c", 1)))
        self.assertFalse(r.receive(t.Message(99, "a", "b", 1)))
        self.assertFalse(r.receive(t.Message(t.HEARTBEAT, "a", "a", 1)))
        self.assertFalse(r.receive(t.Message(t.HEARTBEAT, "a", "b", -1)))
        self.assertFalse(r.receive("garbage"))
        self.assertEqual(r.term, 0)

    def test_a_sender_outside_the_configuration_is_heard(self):
        # A node just added hears from the leader before it knows the
        # configuration, and a voter may hear from a candidate its log does
        # not list yet; refusing strangers is the peer transport's job.
        c = Cluster(["a", "b", "c"])
        r = c.replicas["a"]
        self.assertTrue(r.receive(t.Message(t.HEARTBEAT, "a", "zz", 1)))
        self.assertEqual((r.term, r.leader_id), (1, "zz"))


class PersistenceOrderTests(SynchronousTestCase):
    def test_follower_syncs_entries_before_acknowledging_them(self):
        events = []
        c = Cluster(["a", "b", "c"])
        leader = c.until_leader()
        follower_id = next(i for i in c.ids if i != leader.node_id)
        # rebuild the follower on a recording log holding the same state
        rec = RecordingLog(events)
        rec.append(c.logs[follower_id].entries(1, c.logs[follower_id].last_index() + 1))
        rec.set_hard_state(c.logs[follower_id].hard_state())
        rec.sync()
        c.logs[follower_id] = rec
        old_wire = c.wire
        c.wire = Wire(events)
        c.start(follower_id)
        c.wire = old_wire
        events.clear()
        leader.propose(encode_put(b"k", b"v"), lambda *a: None)
        leader.process()
        c.deliver()
        kinds = [e[0] if e[0] != "send" else ("send", e[1]) for e in events]
        self.assertIn("sync", kinds)
        self.assertLess(kinds.index("append"), kinds.index("sync"))
        self.assertLess(kinds.index("sync"), kinds.index(("send", t.APP_RESP)))

    def test_one_sync_per_ready_and_none_for_commit_only_changes(self):
        events = []
        log = RecordingLog(events)
        r = Replica("n1", ["n1"], log, Wire(), KVStateMachine(MemoryStorage()), random.Random(1))
        r.tick()
        r.process()
        self.assertEqual(events.count(("sync",)), 1)  # term+vote+entry in one Ready
        # the second Ready (commit index only) wrote the hard state unsynced
        self.assertEqual(events[-1][0], "hard_state")


class OutcomeTests(SynchronousTestCase):
    def test_pending_proposal_fails_unavailable_when_leadership_is_lost(self):
        c = Cluster(["a", "b", "c"])
        leader = c.until_leader()
        c.cut = {(leader.node_id, i) for i in c.ids} | {(i, leader.node_id) for i in c.ids}
        out, cb = recorder()
        leader.propose(encode_put(b"k", b"v"), cb)
        leader.process()
        c.tick(25)  # check-quorum makes it step down
        self.assertEqual(len(out), 1)
        self.assertIsInstance(out[0][1], errors.Unavailable)

    def test_read_barrier_without_leader_fails_at_once_with_not_leader_and_no_hint(self):
        c = Cluster(["a", "b", "c"])
        out, cb = recorder()
        c.replicas["a"].read_barrier(cb)
        self.assertEqual(len(out), 1)
        self.assertIsInstance(out[0][1], errors.NotLeader)
        self.assertEqual(out[0][1].leader_id, "")

    def test_read_barrier_that_cannot_be_confirmed_times_out(self):
        c = Cluster(["a", "b", "c"], check_quorum=False)
        leader = c.until_leader()
        c.cut = {(leader.node_id, i) for i in c.ids} | {(i, leader.node_id) for i in c.ids}
        out, cb = recorder()
        leader.read_barrier(cb)
        leader.process()
        for _ in range(9):
            leader.tick()
            leader.process()
        self.assertEqual(out, [])
        leader.tick()
        self.assertEqual(len(out), 1)
        self.assertIsInstance(out[0][1], errors.Unavailable)

    def test_callback_that_raises_does_not_break_the_loop(self):
        r = Replica("n1", ["n1"], MemoryRaftLog(), Wire(), KVStateMachine(MemoryStorage()),
                    random.Random(1))
        r.tick()
        r.process()

        def boom(result, error):
            raise RuntimeError("client bug")

        out, cb = recorder()
        r.propose(encode_put(b"a", b"1"), boom)
        r.propose(encode_put(b"b", b"2"), cb)
        with self.assertLogs("geocachedb.server", "ERROR") as logged:
            r.process()
        self.assertEqual(len(out), 1)
        [record] = logged.records
        self.assertEqual(record.exc_info[0], RuntimeError)

    def test_status_reports_peers_progress_on_the_leader(self):
        c = Cluster(["a", "b", "c"])
        leader = c.until_leader()
        c.tick()
        status = leader.status()
        self.assertEqual(status["role"], "leader")
        self.assertEqual(status["leader"], leader.node_id)
        self.assertEqual(sorted(status["peers"]), sorted(i for i in c.ids if i != leader.node_id))
        for peer in status["peers"].values():
            self.assertEqual(peer["match_index"], status["log_last_index"])
            self.assertEqual(peer["state"], "replicate")
            self.assertEqual(peer["last_contact_ticks"], 0)

    def test_write_of_a_deposed_leader_is_reported_unavailable_and_never_applied(self):
        c = Cluster(["a", "b", "c"])
        leader = c.until_leader()
        old = leader.node_id
        others = [i for i in c.ids if i != old]
        c.cut = {(old, i) for i in c.ids} | {(i, old) for i in c.ids}
        out, cb = recorder()
        leader.propose(encode_put(b"k", b"lost"), cb)
        leader.process()
        c.wire.queue.clear()
        for _ in range(100):
            c.tick()
            if any(c.replicas[i].role == t.LEADER for i in others):
                break
        c.cut = set()
        c.tick(5)
        self.assertEqual(len(out), 1)
        self.assertIsInstance(out[0][1], errors.Unavailable)
        for node_id in c.ids:
            self.assertIsNone(stored_value(c.storages[node_id], b"k"))
