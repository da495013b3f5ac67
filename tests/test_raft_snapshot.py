"""Log compaction and InstallSnapshot: the core's rules (who needs a
snapshot, when one replaces the log) on the tiny network of cores, and the
host's part (compaction, chunked streaming, spooling, crash recovery) on a
network of whole `Replica`s."""

from twisted.trial.unittest import SynchronousTestCase

from geocachedb.raft import confchange
from geocachedb.raft import types as t
from geocachedb.raft.core import check_message, snapshot_chunk
from geocachedb.raft.progress import REPLICATE, SNAPSHOT, ClusterConfig
from geocachedb.raft.types import Message, SnapshotMeta
from geocachedb.statemachine import CONF_KEY

from tests.raft_helpers import Network, ReplicaNet, log_with
from geocachedb.history_format import count_live


def compacted_leader_network(compact_to=5, entries=8):
    """a leads {a, b, c} with `entries` entries of term 1 on a and b; c's
    log is empty and a's log is compacted up to `compact_to`."""
    logs = {"a": log_with([1] * entries), "b": log_with([1] * entries)}
    net = Network(["a", "b", "c"], logs=logs)
    net.isolate("c")
    net.elect("a")
    a = net.cores["a"]
    storage = a.log.storage
    storage.compact(compact_to, storage.term(compact_to))
    storage.sync()
    net.heal()
    return net


class CoreSnapshotRules(SynchronousTestCase):
    def test_leader_asks_the_host_for_a_snapshot_when_a_followers_entries_are_compacted(self):
        net = compacted_leader_network()
        a = net.cores["a"]
        # A heartbeat: c answers, the leader probes it and backs off to
        # index 1, which is compacted away.
        net.tick("a", 3)
        self.assertEqual(net.snapshot_requests["a"], ["c"])
        self.assertEqual(a.tracker.progress["c"].state, SNAPSHOT)
        self.assertFalse([m for m in net.sent_to("c", t.APP) if m.index < 5])

    def test_a_follower_in_snapshot_state_gets_heartbeats_but_no_appends(self):
        net = compacted_leader_network()
        a = net.cores["a"]
        a.tracker.progress["c"].become_snapshot(7)
        before = len(net.sent)
        net.propose("a")
        net.tick("a")
        to_c = [m.type for m in net.sent[before:] if m.to == "c"]
        self.assertNotIn(t.APP, to_c)
        self.assertIn(t.HEARTBEAT, to_c)

    def test_a_follower_acknowledges_a_snapshot_below_its_commit_index_with_its_commit_index(self):
        net = Network(["a", "b"])
        net.elect("a")
        net.propose("a")
        b = net.cores["b"]
        self.assertEqual(b.log.committed, 2)
        meta = SnapshotMeta(1, 1, ClusterConfig(["a", "b"]))
        b.step(snapshot_chunk("b", "a", a_term(net), meta, 0, b"x", True))
        rd = b.ready()
        self.assertEqual(rd.snapshot_chunks, [])
        self.assertEqual([(m.type, m.index) for m in rd.messages], [(t.APP_RESP, 2)])

    def test_a_follower_whose_log_holds_the_snapshots_last_entry_keeps_its_log_and_commits_it(self):
        logs = {"a": log_with([1, 1, 1, 1]), "b": log_with([1, 1, 1, 1])}
        net = Network(["a", "b"], logs=logs)
        b = net.cores["b"]
        b.step(snapshot_chunk("b", "a", 1, SnapshotMeta(3, 1, ClusterConfig(["a", "b"])), 0, b"x", True))
        rd = b.ready()
        self.assertEqual(rd.snapshot_chunks, [])
        self.assertEqual(b.log.committed, 3)
        self.assertEqual(b.log.last_index(), 4)
        self.assertEqual([(m.type, m.index) for m in rd.messages], [(t.APP_RESP, 3)])

    def test_a_follower_hands_chunks_of_a_newer_snapshot_to_its_host(self):
        b = Network(["a", "b"]).cores["b"]
        m = snapshot_chunk("b", "a", 1, SnapshotMeta(9, 1, ClusterConfig(["a", "b"])), 0, b"x", False)
        b.step(m)
        self.assertEqual(b.lead, "a")
        rd = b.ready()
        self.assertEqual(rd.snapshot_chunks, [m])
        self.assertTrue(b.can_restore(9, 1))
        self.assertFalse(b.can_restore(0, 0))

    def test_a_snapshot_from_a_stale_term_is_answered_so_that_its_sender_steps_down(self):
        net = Network(["a", "b"])
        b = net.cores["b"]
        b.term = 5
        b.step(snapshot_chunk("b", "a", 3, SnapshotMeta(9, 1, ClusterConfig(["a", "b"])), 0, b"x", True))
        rd = b.ready()
        self.assertEqual(rd.snapshot_chunks, [])
        self.assertEqual([(m.type, m.term) for m in rd.messages], [(t.APP_RESP, 5)])

    def test_the_leader_replicates_again_once_the_follower_matches_at_the_snapshot_index(self):
        net = compacted_leader_network()
        a = net.cores["a"]
        pr = a.tracker.progress["c"]
        pr.become_snapshot(7)
        net.send(Message(t.APP_RESP, "a", "c", a.term, index=7))
        self.assertEqual(pr.state, REPLICATE)
        self.assertGreaterEqual(pr.match, 7)
        # and it sent c what follows the snapshot
        self.assertTrue([m for m in net.sent_to("c", t.APP) if m.index >= 7])

    def test_a_rejected_snapshot_sends_the_follower_back_to_probing(self):
        net = compacted_leader_network()
        a = net.cores["a"]
        pr = a.tracker.progress["c"]
        pr.become_snapshot(7)
        a.step(Message(t.SNAPSHOT_RESP, "a", "c", a.term, index=7, reject=True))
        self.assertEqual((pr.state, pr.pending_snapshot), ("probe", 0))

    def test_snapshot_meta_names_the_term_and_configuration_at_an_index(self):
        net = compacted_leader_network()
        a = net.cores["a"]
        meta = a.snapshot_meta(a.log.committed)
        self.assertEqual(meta.index, a.log.committed)
        self.assertEqual(meta.term, a.log.term(a.log.committed))
        self.assertEqual(meta.config, ClusterConfig(["a", "b", "c"]))
        self.assertIsNone(a.snapshot_meta(a.log.last_index() + 5))

    def test_malformed_snapshot_messages_are_refused(self):
        good = snapshot_chunk("b", "a", 1, SnapshotMeta(3, 1, ClusterConfig(["a"])), 0, b"x", True)
        check_message(good)
        for bad in (good.copy(context=b""), good.copy(index=0), good.copy(context=b"\x01{nope"),
                    good.copy(snapshot="text")):
            self.assertRaises(ValueError, check_message, bad)


def a_term(net):
    return net.cores["a"].term


class Compaction(SynchronousTestCase):
    def test_the_log_is_compacted_once_snapshot_entries_can_go_keeping_the_overhang(self):
        net = ReplicaNet(["a", "b", "c"], snapshot_entries=20, compaction_overhang=5)
        net.write_many(100)
        for node_id in net.ids:
            log, applied = net.logs[node_id], net.storages[node_id].applied_index()
            self.assertGreater(log.first_index(), 50, node_id)
            self.assertLessEqual(applied - (log.first_index() - 1), 20 + 5 + 10)
            self.assertGreaterEqual(applied - (log.first_index() - 1), 5)

    def test_snapshot_entries_zero_never_compacts(self):
        net = ReplicaNet(["a", "b", "c"], snapshot_entries=0)
        net.write_many(60)
        self.assertEqual({net.logs[i].first_index() for i in net.ids}, {1})

    def test_compaction_never_passes_the_index_applied_before_the_last_storage_batch(self):
        # LMDB without meta sync may undo its last batch in an OS crash; the
        # log must still hold those entries.
        net = ReplicaNet(["a"], snapshot_entries=1, compaction_overhang=0)
        leader = net.until_leader()
        net.put(b"x", b"1")
        before_last = net.storages["a"].applied_index()
        net.put(b"y", b"2")
        self.assertLessEqual(net.logs["a"].first_index() - 1, before_last)
        self.assertEqual(leader.compact(keep=0), None)

    def test_compact_now_drops_what_is_applied_and_durable(self):
        net = ReplicaNet(["a", "b", "c"], snapshot_entries=0)
        leader = net.until_leader()
        net.write_many(30)
        index = leader.compact(keep=3)
        self.assertIsNotNone(index)
        self.assertEqual(net.logs[leader.node_id].first_index(), index + 1)
        self.assertEqual(leader.status()["snapshot_index"], index)
        self.assertIsNone(leader.compact(keep=3))  # nothing new to drop

    def test_a_compacted_node_restarts_from_its_state_machine_and_the_log_tail(self):
        net = ReplicaNet(["a", "b", "c"], snapshot_entries=10, compaction_overhang=2)
        net.write_many(50)
        for node_id in net.ids:
            net.logs[node_id].sync()
            net.restart(node_id)
        net.write_many(5, b"after")
        datas = [net.data(i) for i in net.ids]
        self.assertEqual(datas[0], datas[1])
        self.assertEqual(datas[1], datas[2])
        self.assertEqual(count_live(datas[0]), 55)


def lagging_follower_net(**cfg):
    """{a, b, c} with c cut off while 100 writes go in and the others
    compact their logs; returns (net, leader, c's id)."""
    cfg.setdefault("snapshot_entries", 20)
    cfg.setdefault("compaction_overhang", 5)
    cfg.setdefault("snapshot_chunk_bytes", 100)
    net = ReplicaNet(["a", "b", "c"], **cfg)
    leader = net.until_leader()
    lagging = next(i for i in net.ids if i != leader.node_id)
    net.isolate(lagging)
    net.write_many(100)
    assert net.logs[leader.node_id].first_index() > 2
    return net, leader, lagging


class InstallSnapshot(SynchronousTestCase):
    def test_a_follower_behind_the_compacted_log_catches_up_through_a_snapshot(self):
        net, leader, lagging = lagging_follower_net()
        net.heal()
        net.tick(20)
        self.assertEqual(net.data(lagging), net.data(leader.node_id))
        self.assertEqual(net.storages[lagging].applied_index(), leader.applied_index)
        self.assertEqual(net.stores[lagging].finished, 1)
        log = net.logs[lagging]
        self.assertGreater(log.first_index(), 2)  # reset to the snapshot, not replayed
        # and replication goes on from there
        net.write_many(5, b"more")
        self.assertEqual(net.data(lagging), net.data(leader.node_id))
        self.assertEqual(net.stores[lagging].released, 1)

    def test_snapshot_chunks_are_bounded_and_one_at_a_time_per_follower(self):
        net, leader, lagging = lagging_follower_net(snapshot_chunk_bytes=64)
        net.heal()
        in_flight = []
        peak = [0]

        def hook(m):
            if m.type == t.SNAPSHOT:
                self.assertLessEqual(len(m.snapshot), 64)
                in_flight.append(m.commit)
            elif m.type == t.SNAPSHOT_RESP and in_flight:
                in_flight.pop(0)
            peak[0] = max(peak[0], len(in_flight))
            return True

        net.hook = hook
        net.tick(30)
        chunks = [m for m in net.sent if m.type == t.SNAPSHOT]
        self.assertGreater(len(chunks), 10)
        self.assertEqual(peak[0], 1)
        self.assertEqual(net.data(lagging), net.data(leader.node_id))

    def test_lost_chunks_are_resent(self):
        net, leader, lagging = lagging_follower_net()
        net.heal()
        dropped = []

        def hook(m):
            if m.type == t.SNAPSHOT and m.commit > 0 and len(dropped) < 3 and m.commit not in dropped:
                dropped.append(m.commit)
                return False
            return True

        net.hook = hook
        net.tick(40)
        self.assertEqual(len(dropped), 3)
        self.assertEqual(net.data(lagging), net.data(leader.node_id))

    def test_a_follower_restarted_mid_transfer_rejects_and_the_leader_starts_over(self):
        net, leader, lagging = lagging_follower_net(snapshot_chunk_bytes=50)
        net.heal()
        seen = []

        def hook(m):
            if m.type == t.SNAPSHOT and m.to == lagging:
                seen.append(m.commit)
                if len(seen) == 5:
                    net.restart(lagging)  # the spool is lost with the process
            return True

        net.hook = hook
        net.tick(40)
        rejects = [m for m in net.sent if m.type == t.SNAPSHOT_RESP and m.reject]
        self.assertTrue(rejects)
        self.assertEqual(seen.count(0), 2)  # started over once
        self.assertEqual(net.data(lagging), net.data(leader.node_id))

    def test_the_snapshot_carries_the_configuration(self):
        net, leader, lagging = lagging_follower_net()
        net.heal()
        chunks = []
        net.hook = lambda m: chunks.append(m) or True
        net.tick(20)
        first = next(m for m in chunks if m.type == t.SNAPSHOT)
        self.assertEqual(confchange.decode(first.context[1:]), ClusterConfig(net.ids))
        self.assertEqual(net.replicas[lagging].members(),
                         [(i, "voter") for i in sorted(net.ids)])

    def test_a_corrupt_snapshot_is_rejected_and_the_old_state_stays(self):
        net, leader, lagging = lagging_follower_net()
        before = net.data(lagging)
        net.heal()
        corrupted = []

        def hook(m):
            if m.type == t.SNAPSHOT and not corrupted and m.commit > 0:
                corrupted.append(m)
                m.snapshot = bytes(b ^ 0xFF for b in m.snapshot)
            return True

        net.hook = hook
        net.tick()
        rejects = [m for m in net.sent if m.type == t.SNAPSHOT_RESP and m.reject]
        self.assertTrue(corrupted)
        self.assertEqual(len(rejects), 1)
        self.assertEqual(net.data(lagging), before)
        self.assertEqual(net.stores[lagging].completed(), None)
        net.tick(40)  # the leader starts over with good data
        self.assertEqual(net.data(lagging), net.data(leader.node_id))

    def test_the_leader_does_not_compact_past_a_snapshot_it_is_sending(self):
        net, leader, lagging = lagging_follower_net(snapshot_chunk_bytes=20)
        net.heal()
        net.hook = lambda m: not (m.type == t.SNAPSHOT_RESP)  # the transfer stalls
        net.tick(3)
        sending = leader.status()["snapshots_sending"]
        self.assertIn(lagging, sending)
        index = sending[lagging]["index"]
        net.write_many(100, b"meanwhile")
        self.assertLessEqual(net.logs[leader.node_id].first_index() - 1, index)
        net.hook = None
        net.tick(60)
        self.assertEqual(net.data(lagging), net.data(leader.node_id))

    def test_a_sender_without_progress_gives_up_and_a_later_heartbeat_answer_retries(self):
        net, leader, lagging = lagging_follower_net()
        net.heal()
        net.hook = lambda m: not (m.type == t.SNAPSHOT_RESP)
        net.tick(3)
        self.assertIn(lagging, leader.status()["snapshots_sending"])
        net.tick(2 * net.config.election_ticks + 2)
        starts = [m for m in net.sent if m.type == t.SNAPSHOT and m.commit == 0]
        self.assertGreaterEqual(len(starts), 2)
        net.hook = None
        net.tick(30)
        self.assertEqual(net.data(lagging), net.data(leader.node_id))

    def test_status_shows_transfers_on_both_sides(self):
        net, leader, lagging = lagging_follower_net()
        net.heal()
        net.hook = lambda m: not (m.type == t.SNAPSHOT_RESP and m.commit > 300)
        net.tick(3)
        sending = leader.status()["snapshots_sending"][lagging]
        receiving = net.replicas[lagging].status()["snapshot_receiving"]
        self.assertEqual(receiving["leader"], leader.node_id)
        self.assertEqual(receiving["index"], sending["index"])
        self.assertEqual(leader.status()["peers"][lagging]["snapshot_index"], sending["index"])


class _FailingSync(Exception):
    pass


class CrashDuringInstall(SynchronousTestCase):
    def fail_syncs_of(self, net, node_id):
        log = net.logs[node_id]
        original = log.sync

        def sync():
            if log.first_index() > 1 or log.unsynced_writes() and any(
                    op == "reset" for op, _ in log._journal):
                raise _FailingSync()
            original()

        log.sync = sync
        return lambda: setattr(log, "sync", original)

    def test_a_crash_before_the_log_reset_is_durable_is_repaired_on_restart(self):
        net, leader, lagging = lagging_follower_net()
        undo = self.fail_syncs_of(net, lagging)
        net.heal()
        with self.assertRaises(_FailingSync):
            net.tick(20)
        undo()
        net.queue = []
        net.crash(lagging)
        # The storage holds the snapshot, the durable log does not know it.
        self.assertGreater(net.storages[lagging].applied_index(), net.logs[lagging].last_index())
        net.start(lagging)
        self.assertEqual(net.logs[lagging].first_index() - 1, net.storages[lagging].applied_index())
        net.tick(20)
        self.assertEqual(net.data(lagging), net.data(leader.node_id))

    def test_a_crash_after_finishing_but_before_loading_the_storage_loads_it_on_restart(self):
        net, leader, lagging = lagging_follower_net()
        store = net.stores[lagging]
        original_restore = type(net.replicas[lagging]._sm).restore

        def crash_in_restore(sm, chunks):
            raise _FailingSync()

        net.replicas[lagging]._sm.restore = lambda chunks: crash_in_restore(None, chunks)
        net.heal()
        with self.assertRaises(_FailingSync):
            net.tick(20)
        self.assertIsNotNone(store.completed())
        old_applied = net.storages[lagging].applied_index()
        net.queue = []
        net.restart(lagging)
        self.assertGreater(net.storages[lagging].applied_index(), old_applied)
        self.assertEqual(net.storages[lagging].applied_index(), store.completed().index)
        del original_restore
        net.tick(20)
        self.assertEqual(net.data(lagging), net.data(leader.node_id))

    def test_a_state_machine_ahead_of_the_log_without_a_spooled_snapshot_refuses_to_start(self):
        net, leader, lagging = lagging_follower_net()
        undo = self.fail_syncs_of(net, lagging)
        net.heal()
        with self.assertRaises(_FailingSync):
            net.tick(20)
        undo()
        net.stores[lagging].release()  # as if the spool was lost
        net.crash(lagging)
        with self.assertRaises(RuntimeError) as e:
            net.start(lagging)
        self.assertIn("ahead of the Raft log", str(e.exception))

    def test_a_crash_mid_transfer_leaves_the_old_state_and_the_transfer_starts_over(self):
        net, leader, lagging = lagging_follower_net(snapshot_chunk_bytes=40)
        before = (net.storages[lagging].applied_index(), net.data(lagging))
        net.heal()
        count = []

        def hook(m):
            if m.type == t.SNAPSHOT and m.to == lagging:
                count.append(1)
                if len(count) == 4:
                    net.crash(lagging)
                    self.assertEqual((net.storages[lagging].applied_index(),
                                      net.data(lagging)), before)
                    self.assertIsNone(net.stores[lagging].completed())
                    net.start(lagging)
            return True

        net.hook = hook
        net.tick(40)
        self.assertEqual(net.data(lagging), net.data(leader.node_id))


class StateMachineConfiguration(SynchronousTestCase):
    def test_applying_a_conf_entry_stores_the_configuration_with_the_applied_index(self):
        net = ReplicaNet(["a", "b", "c"])
        net.until_leader()
        net.conf_change("add_learner", "d")
        for node_id in net.ids:
            stored = net.storages[node_id].get(CONF_KEY)
            self.assertEqual(confchange.decode(stored), ClusterConfig(["a", "b", "c"], ["d"]))


class Backup(SynchronousTestCase):
    def test_snapshot_for_a_backup_names_the_index_its_stream_holds(self):
        from geocachedb.storage.memory import MemoryStorage

        net = ReplicaNet(["a", "b", "c"])
        leader = net.until_leader()
        net.write_many(12)
        meta, chunks = leader.snapshot()
        data = list(chunks)
        self.assertEqual(meta.index, leader.applied_index)
        self.assertEqual(meta.term, leader.term)
        self.assertEqual(meta.config, ClusterConfig(["a", "b", "c"]))
        copy = MemoryStorage()
        copy.snapshot_in(data)
        self.assertEqual(copy.applied_index(), meta.index)
        self.assertEqual(copy.scan(), net.storages[leader.node_id].scan())

    def test_closing_an_unread_snapshot_releases_the_storage(self):
        closed = []

        def stream():
            try:
                yield b"GCSNAP1\n" + (7).to_bytes(8, "big")
                yield b"never read"
            finally:
                closed.append(True)

        net = ReplicaNet(["a"])
        leader = net.until_leader()
        leader._sm.snapshot_chunks = stream
        meta, chunks = leader.snapshot()
        self.assertEqual(meta.index, 7)
        chunks.close()
        self.assertEqual(closed, [True])
