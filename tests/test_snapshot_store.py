"""Snapshot stores (`geocachedb.snapshots`): spooling an incoming snapshot
so that only a complete one ever counts, across crashes; the outgoing
chunker; restoring a backup as a new cluster."""

import os
import random
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from geocachedb.interfaces import ISnapshotStore

from geocachedb.raft import confchange
from geocachedb.raft.memlog import MemoryRaftLog
from geocachedb.raft.progress import ClusterConfig
from geocachedb.raft.types import SnapshotMeta
from geocachedb.server.replica import Replica
from geocachedb.snapshots import (
    FileSnapshotStore,
    MemorySnapshotStore,
    OutgoingSnapshot,
    decode_meta,
    encode_meta,
    rechunk,
    restore_as_new_cluster,
)
from geocachedb.statemachine import CONF_KEY, KVStateMachine
from geocachedb.storage.memory import MemoryStorage
from tests.raft_helpers import stored_value

META = SnapshotMeta(12, 3, ClusterConfig(["a", "b"], ["c"]))


class StoreContract:
    """The behaviour both stores share."""

    def make(self):
        raise NotImplementedError

    def test_provides_the_whole_interface_the_replica_calls(self):
        self.assertTrue(verifyObject(ISnapshotStore, self.make()))

    def test_nothing_is_completed_until_finish(self):
        store = self.make()
        store.begin(META)
        store.write(b"abc")
        self.assertIsNone(store.completed())
        store.write(b"def")
        store.finish()
        self.assertEqual(store.completed(), META)
        self.assertEqual(b"".join(store.chunks()), b"abcdef")
        # chunks() can be iterated again (a storage may retry its load)
        chunks = store.chunks()
        self.assertEqual(b"".join(chunks), b"".join(chunks))

    def test_abort_drops_the_partial_spool_but_not_the_completed_one(self):
        store = self.make()
        store.begin(META)
        store.write(b"old")
        store.finish()
        other = SnapshotMeta(20, 4, ClusterConfig(["a"]))
        store.begin(other)
        store.write(b"partial")
        store.abort()
        self.assertEqual(store.completed(), META)
        self.assertEqual(b"".join(store.chunks()), b"old")

    def test_a_newer_finished_snapshot_replaces_the_completed_one(self):
        store = self.make()
        store.begin(META)
        store.write(b"old")
        store.finish()
        other = SnapshotMeta(20, 4, ClusterConfig(["a"]))
        store.begin(other)
        store.write(b"new")
        store.finish()
        self.assertEqual(store.completed(), other)
        self.assertEqual(b"".join(store.chunks()), b"new")

    def test_release_forgets_the_completed_snapshot(self):
        store = self.make()
        store.begin(META)
        store.finish()
        store.release()
        self.assertIsNone(store.completed())
        store.release()  # idempotent

    def test_the_incoming_snapshots_metadata_is_known_until_finished_or_aborted(self):
        store = self.make()
        self.assertIsNone(store.incoming())
        store.begin(META)
        store.write(b"part")
        self.assertEqual(store.incoming(), META)
        store.finish()
        self.assertIsNone(store.incoming())
        store.begin(META)
        store.abort()
        self.assertIsNone(store.incoming())

    def test_begin_restarts_a_partial_spool(self):
        store = self.make()
        store.begin(META)
        store.write(b"xx")
        store.begin(META)
        store.write(b"yy")
        store.finish()
        self.assertEqual(b"".join(store.chunks()), b"yy")


class MemoryStoreTests(StoreContract, SynchronousTestCase):
    def make(self):
        return MemorySnapshotStore()

    def test_a_crash_loses_the_spool_and_keeps_the_finished_snapshot(self):
        store = self.make()
        store.begin(META)
        store.write(b"done")
        store.finish()
        half = SnapshotMeta(30, 5, ClusterConfig(["a"]))
        store.begin(half)
        store.write(b"half")
        store.crash()
        self.assertEqual(store.completed(), META)
        self.assertEqual(store.incoming(), half)  # what was offered, not the data
        self.assertRaises(ValueError, store.write, b"more")


class FileStoreTests(StoreContract, SynchronousTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="gc-snap-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def make(self):
        return FileSnapshotStore(self.dir)

    def test_a_reopened_store_finds_the_completed_snapshot(self):
        store = self.make()
        store.begin(META)
        store.write(b"x" * 1000)
        store.finish()
        again = self.make()
        self.assertEqual(again.completed(), META)
        self.assertEqual(b"".join(again.chunks()), b"x" * 1000)

    def test_a_reopened_store_removes_a_partial_spool_and_orphans(self):
        store = self.make()
        store.begin(META)
        store.write(b"partial")
        # a process killed here leaves incoming.part; a crash between the
        # data rename and the meta rename leaves an unnamed data file
        open(os.path.join(self.dir, "snapshot-99-9.data"), "wb").close()
        open(os.path.join(self.dir, "snapshot.meta.tmp"), "wb").close()
        again = self.make()
        self.assertIsNone(again.completed())
        self.assertEqual(again.incoming(), META)  # the offer survives, the data not
        self.assertEqual(os.listdir(self.dir), ["incoming.meta"])
        again.abort()
        self.assertEqual(os.listdir(self.dir), [])

    def test_a_meta_naming_a_short_data_file_is_not_a_completed_snapshot(self):
        store = self.make()
        store.begin(META)
        store.write(b"0123456789")
        store.finish()
        name = [n for n in os.listdir(self.dir) if n.endswith(".data")][0]
        with open(os.path.join(self.dir, name), "r+b") as f:
            f.truncate(4)
        self.assertIsNone(store.completed())

    def test_a_garbled_meta_file_names_nothing(self):
        store = self.make()
        store.begin(META)
        store.finish()
        with open(os.path.join(self.dir, "snapshot.meta"), "wb") as f:
            f.write(b"{garbage")
        again = self.make()
        self.assertIsNone(again.completed())

    def test_chunks_are_read_in_bounded_pieces(self):
        store = self.make()
        store.begin(META)
        for _ in range(5):
            store.write(b"y" * 200_000)
        store.finish()
        sizes = [len(c) for c in store.chunks()]
        self.assertEqual(sum(sizes), 1_000_000)
        self.assertLessEqual(max(sizes), 256 * 1024)

    def test_a_replica_recovers_an_interrupted_install_from_the_file_store(self):
        # The storage load and the log reset did not happen before the crash.
        leader_storage = MemoryStorage()
        leader_sm = KVStateMachine(leader_storage)
        leader_storage.apply_batch([(b"k", b"v")], [], 40)
        store = self.make()
        store.begin(SnapshotMeta(40, 2, ClusterConfig(["a", "b", "c"])))
        for chunk in leader_sm.snapshot_chunks():
            store.write(chunk)
        store.finish()
        storage, log = MemoryStorage(), MemoryRaftLog()
        r = Replica("c", [], log, _NoWire(), KVStateMachine(storage), random.Random(1),
                    snapshot_store=FileSnapshotStore(self.dir))
        self.assertEqual(stored_value(storage, b"k"), b"v")
        self.assertEqual((log.first_index(), log.term(40)), (41, 2))
        self.assertEqual(r.applied_index, 40)


class _NoWire:
    def send(self, message):
        pass


class MetaAndChunks(SynchronousTestCase):
    def test_meta_round_trips(self):
        meta, doc = decode_meta(encode_meta(META, file="f"))
        self.assertEqual(meta, META)
        self.assertEqual(doc["file"], "f")
        self.assertRaises(ValueError, decode_meta, b"[]")

    def test_outgoing_snapshot_cuts_bounded_chunks_and_knows_the_last(self):
        source = [b"a" * 700, b"b" * 10, b"c" * 300]
        out = OutgoingSnapshot("b", 1, META, iter(source), 256, now=0)
        got = []
        while True:
            got.append((out.offset, out.data, out.last))
            if out.last:
                break
            self.assertFalse(out.acked(out.offset, 1))  # a stale ack
            self.assertTrue(out.acked(out.offset + len(out.data), 1))
        self.assertEqual(b"".join(d for _, d, _ in got), b"".join(source))
        self.assertTrue(all(len(d) <= 256 for _, d, _ in got))
        self.assertEqual([last for _, _, last in got].count(True), 1)
        self.assertFalse(out.acked(out.offset + len(out.data), 2))  # nothing after the last

    def test_rechunk(self):
        self.assertEqual(list(rechunk([b"abc", b"de", b"f"], 2)), [b"ab", b"cd", b"ef"])


class RestoreAsNewCluster(SynchronousTestCase):
    def backup(self):
        storage = MemoryStorage()
        old = ClusterConfig(["n1", "n2", "n3"])
        storage.apply_batch([(b"a", b"1"), (b"b", b"2"), (CONF_KEY, confchange.encode(old))], [], 77)
        return list(storage.snapshot_out())

    def test_a_backup_becomes_a_one_voter_cluster_that_elects_itself(self):
        storage, log = MemoryStorage(), MemoryRaftLog()
        sm = KVStateMachine(storage)
        index = restore_as_new_cluster(sm, log, "solo", self.backup(), address="h:1")
        self.assertEqual(index, 77)
        r = Replica("solo", ["ignored"], log, _NoWire(), sm, random.Random(2))
        self.assertEqual(r.members(), [("solo", "voter")])
        self.assertEqual(r.addresses(), {"solo": "h:1"})
        r.tick()
        r.process()
        self.assertEqual(r.role, "leader")
        self.assertEqual(stored_value(storage, b"a"), b"1")
        self.assertGreater(r.term, 1)

    def test_a_corrupt_backup_fails_and_changes_nothing(self):
        storage, log = MemoryStorage(), MemoryRaftLog()
        chunks = self.backup()
        chunks[-1] = chunks[-1][:-1] + bytes([chunks[-1][-1] ^ 1])
        self.assertRaises(ValueError, restore_as_new_cluster, KVStateMachine(storage), log, "s", chunks)
        self.assertEqual((storage.applied_index(), storage.scan(), log.last_index()), (0, [], 0))

    def test_restore_needs_an_empty_log(self):
        log = MemoryRaftLog()
        log.reset(5, 1)
        self.assertRaises(ValueError, restore_as_new_cluster, KVStateMachine(MemoryStorage()), log,
                          "s", self.backup())
