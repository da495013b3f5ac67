"""The multi-version data model, through the state machine, on every
storage backend: revisions and key metadata, reads at old revisions,
compaction, ranges, transactions, incr, sequential keys, exactly-once, and
that all of it survives a restart and a snapshot into another backend."""

from twisted.trial.unittest import SynchronousTestCase

from geocachedb import commands, errors, sessions
from geocachedb.commands import encode, encode_delete, encode_put
from geocachedb.raft.types import Entry
from geocachedb.statemachine import KVStateMachine
from geocachedb.storage.btree.storage import BTreeStorage
from geocachedb.storage.lmdb import LMDBStorage
from geocachedb.storage.memory import MemoryStorage
from geocachedb.wire import geocache_pb2 as pb

C = pb.Compare


def compare(key, target, result, **value):
    return C(key=key, target=target, result=result, **value)


def txn(compares=(), success=(), failure=()):
    t = pb.TxnRequest()
    t.compare.extend(compares)
    for ops, branch in ((success, t.success), (failure, t.failure)):
        for kind, body in ops:
            getattr(branch.add(), kind).CopyFrom(body)
    return t


def put_op(key, value):
    return "put", pb.PutRequest(key=key, value=value)


def incr_op(key, delta):
    return "incr", pb.IncrRequest(key=key, delta=delta)


class Model:
    """A state machine on one backend, fed entries with rising indexes."""

    def __init__(self, case, backend, write_behind=0):
        self.case = case
        self.backend = backend
        self.path = case.mktemp()
        self.write_behind = write_behind
        self.storage = self._open()
        self.sm = KVStateMachine(self.storage, write_behind=write_behind)
        self.index = self.storage.applied_index()

    def _open(self):
        if self.backend == "memory":
            return MemoryStorage()
        if self.backend == "lmdb":
            return LMDBStorage(self.path)
        return BTreeStorage(self.path)

    def apply(self, *datas):
        entries = []
        for data in datas:
            self.index += 1
            entries.append(Entry(self.index, 1, data))
        return [None if r is None else commands.response_of(r) for r in self.sm.apply(entries)]

    def one(self, data):
        [result] = self.apply(data)
        return result

    def restart(self):
        """Flush and reopen: what a clean restart gives."""
        self.sm.flush()
        if self.backend == "memory":
            self.sm = KVStateMachine(self.storage, write_behind=self.write_behind)
            return
        self.storage.close()
        self.storage = self._open()
        self.sm = KVStateMachine(self.storage, write_behind=self.write_behind)

    def close(self):
        if self.backend != "memory":
            self.storage.close()


class _DataModel:
    backend = None
    write_behind = 0

    def setUp(self):
        self.m = Model(self, self.backend, self.write_behind)
        self.addCleanup(lambda: self.m.close())

    def kv(self, key, revision=0):
        return self.m.sm.get_kv(key, revision)

    # ------------------------------------------------------- revisions ---

    def test_revision_moves_once_per_change_only(self):
        m = self.m
        r = m.apply(encode_put(b"a", b"1"), b"", encode_delete(b"missing"), encode_put(b"a", b"2"),
                    encode_delete(b"a"), encode_put(b"a", b"3"))
        self.assertEqual([x.header.revision if x else None for x in r], [1, None, 1, 2, 3, 4])
        self.assertEqual(m.sm.revision, 4)
        kv = self.kv(b"a")
        # Recreated after the delete: a new create revision, version 1.
        self.assertEqual((kv.create_revision, kv.mod_revision, kv.version), (4, 4, 1))
        self.assertEqual((self.kv(b"a", 2).version, self.kv(b"a", 2).create_revision), (2, 1))
        self.assertIsNone(self.kv(b"a", 3))

    def test_reads_at_old_revisions_survive_a_restart(self):
        m = self.m
        for i in range(5):
            m.apply(encode_put(b"k", b"v%d" % i))
        m.restart()
        self.assertEqual([self.kv(b"k", r).value for r in range(1, 6)], [b"v%d" % i for i in range(5)])
        self.assertEqual(m.sm.revision, 5)
        m.apply(encode_put(b"k", b"after"))
        self.assertEqual(self.kv(b"k").mod_revision, 6)

    def test_future_revision_is_refused(self):
        self.m.apply(encode_put(b"k", b"v"))
        with self.assertRaises(errors.FutureRevision) as e:
            self.kv(b"k", 2)
        self.assertIn("current revision is 1", str(e.exception))

    # ------------------------------------------------------ compaction ---

    def test_compaction_keeps_the_latest_version_and_the_tombstone_at_its_revision(self):
        m = self.m
        m.apply(encode_put(b"a", b"1"), encode_put(b"a", b"2"),  # 1, 2
                encode_put(b"b", b"1"), encode_delete(b"b"),  # 3, 4
                encode_put(b"c", b"1"), encode_delete(b"c"))  # 5, 6
        result = m.one(encode("compact", pb.CompactRequest(revision=6)))
        self.assertFalse(result.HasField("error"), result)
        self.assertEqual(result.header.revision, 6)  # compaction is not a change
        with self.assertRaises(errors.Compacted) as e:
            self.kv(b"a", 5)
        self.assertIn("compact revision is 6", str(e.exception))
        self.assertEqual(self.kv(b"a", 6).value, b"2")
        # b's tombstone (4 < 6) is gone with b; c's tombstone at 6 stays.
        self.assertNotIn(b"b", m.sm.space.index)
        self.assertEqual([e[0] for e in m.sm.space.index[b"c"]], [6])
        m.restart()
        self.assertEqual(m.sm.compact_revision, 6)
        self.assertEqual(self.kv(b"a").value, b"2")
        self.assertEqual(sorted(m.sm.space.index), [b"a", b"c"])
        again = m.one(encode("compact", pb.CompactRequest(revision=6)))
        self.assertEqual(again.error.code, pb.COMPACTED)
        future = m.one(encode("compact", pb.CompactRequest(revision=7)))
        self.assertEqual(future.error.code, pb.FUTURE_REVISION)

    def test_compaction_frees_storage(self):
        m = self.m
        for i in range(50):
            m.apply(encode_put(b"k", b"v%d" % i))
        m.sm.flush()
        before = len(m.storage.scan())
        m.one(encode("compact", pb.CompactRequest(revision=50)))
        m.sm.flush()
        self.assertEqual(before - len(m.storage.scan()), 49)

    # ----------------------------------------------------------- range ---

    def range(self, **kw):
        out = pb.RangeResponse()
        self.m.sm.range(pb.RangeRequest(**kw), out)
        return out

    def test_range_options(self):
        m = self.m
        for key in (b"a", b"b1", b"b2", b"b3", b"c"):
            m.apply(encode_put(key, key + b"!"))  # revisions 1..5
        m.apply(encode_put(b"b1", b"again"))  # 6
        r = self.range(prefix=b"b", limit=2)
        self.assertEqual(([kv.key for kv in r.kvs], r.more, r.count), ([b"b1", b"b2"], True, 3))
        r = self.range(prefix=b"b", sort_order=pb.RangeRequest.DESCEND, limit=1)
        self.assertEqual([kv.key for kv in r.kvs], [b"b3"])
        r = self.range(start=b"a", end=b"c", keys_only=True)
        self.assertEqual([(kv.key, kv.value) for kv in r.kvs],
                         [(b"a", b""), (b"b1", b""), (b"b2", b""), (b"b3", b"")])
        r = self.range(count_only=True)
        self.assertEqual((len(r.kvs), r.count, r.more), (0, 5, False))
        r = self.range(min_mod_revision=4)
        self.assertEqual([kv.key for kv in r.kvs], [b"b1", b"b3", b"c"])
        r = self.range(max_create_revision=2)
        self.assertEqual([kv.key for kv in r.kvs], [b"a", b"b1"])
        r = self.range(prefix=b"b", revision=3)
        self.assertEqual([(kv.key, kv.value) for kv in r.kvs], [(b"b1", b"b1!"), (b"b2", b"b2!")])

    def test_delete_range_with_prev_kv(self):
        m = self.m
        m.apply(encode_put(b"p/1", b"x"), encode_put(b"p/2", b"y"), encode_put(b"q", b"z"))
        result = m.one(encode_delete(b"p/", range_end=b"p0", prev_kv=True))
        self.assertEqual(result.delete.count, 2)
        self.assertEqual([(kv.key, kv.value) for kv in result.delete.prev_kvs], [(b"p/1", b"x"), (b"p/2", b"y")])
        self.assertEqual(result.header.revision, 4)  # one revision for both
        self.assertEqual(m.sm.scan(), [(b"q", b"z")])
        everything = m.one(encode_delete(b"a", range_end=b"\x00"))
        self.assertEqual((everything.delete.count, m.sm.scan()), (1, []))

    def test_put_with_prev_kv(self):
        m = self.m
        first = m.one(encode_put(b"k", b"1", prev_kv=True))
        self.assertFalse(first.put.HasField("prev_kv"))
        second = m.one(encode_put(b"k", b"2", prev_kv=True))
        self.assertEqual((second.put.prev_kv.value, second.put.prev_kv.version), (b"1", 1))

    # ------------------------------------------------------------- txn ---

    def test_txn_compare_and_swap(self):
        m = self.m
        m.apply(encode_put(b"k", b"v1"))
        ok = m.one(encode("txn", txn([compare(b"k", C.MOD, C.EQUAL, mod_revision=1)],
                                     [put_op(b"k", b"v2"), put_op(b"other", b"x")])))
        self.assertTrue(ok.txn.succeeded)
        self.assertEqual(ok.header.revision, 2)
        self.assertEqual((self.kv(b"k").mod_revision, self.kv(b"other").mod_revision), (2, 2))
        stale = m.one(encode("txn", txn([compare(b"k", C.MOD, C.EQUAL, mod_revision=1)],
                                        [put_op(b"k", b"lost")])))
        self.assertFalse(stale.txn.succeeded)
        # A failed compare with an empty else branch changes nothing.
        self.assertEqual((stale.header.revision, m.sm.revision, self.kv(b"k").value), (2, 2, b"v2"))

    def test_compares_on_every_target_and_operator(self):
        m = self.m
        m.apply(encode_put(b"k", b"5"), encode_put(b"k", b"6"))  # version 2, create 1, mod 2

        def holds(*cmps):
            r = m.one(encode("txn", txn(list(cmps))))
            return r.txn.succeeded

        self.assertTrue(holds(compare(b"k", C.VALUE, C.EQUAL, value=b"6")))
        self.assertTrue(holds(compare(b"k", C.VALUE, C.GREATER, value=b"5")))
        self.assertTrue(holds(compare(b"k", C.VERSION, C.EQUAL, version=2)))
        self.assertTrue(holds(compare(b"k", C.CREATE, C.LESS, create_revision=2)))
        self.assertTrue(holds(compare(b"k", C.MOD, C.NOT_EQUAL, mod_revision=1)))
        self.assertFalse(holds(compare(b"k", C.MOD, C.GREATER, mod_revision=2)))
        # A missing key: a value compare is false, the others compare with 0.
        self.assertFalse(holds(compare(b"gone", C.VALUE, C.NOT_EQUAL, value=b"x")))
        self.assertTrue(holds(compare(b"gone", C.CREATE, C.EQUAL, create_revision=0)))
        self.assertTrue(holds(compare(b"gone", C.VERSION, C.LESS, version=1)))

    def test_compare_over_a_range_needs_every_key(self):
        m = self.m
        m.apply(encode_put(b"r/1", b"a"), encode_put(b"r/2", b"a"), encode_put(b"r/3", b"b"))
        every = compare(b"r/", C.VALUE, C.EQUAL, value=b"a", range_end=b"r0")
        self.assertFalse(m.one(encode("txn", txn([every]))).txn.succeeded)
        first_two = compare(b"r/", C.VALUE, C.EQUAL, value=b"a", range_end=b"r/3")
        self.assertTrue(m.one(encode("txn", txn([first_two]))).txn.succeeded)

    def test_txn_that_fails_midway_changes_nothing(self):
        m = self.m
        m.apply(encode_put(b"text", b"not a number"))
        r = m.one(encode("txn", txn([], [put_op(b"a", b"1"), incr_op(b"text", 1)])))
        self.assertEqual(r.error.code, pb.INVALID_ARGUMENT)
        self.assertIn("not a decimal integer", r.error.message)
        self.assertIsNone(self.kv(b"a"))
        self.assertEqual(m.sm.revision, 1)

    def test_nested_txn_and_reads_inside_see_earlier_writes(self):
        m = self.m
        inner = txn([compare(b"n", C.VALUE, C.EQUAL, value=b"1")], [put_op(b"inner", b"yes")])
        outer = txn([], [incr_op(b"n", 1), ("txn", inner), ("range", pb.RangeRequest(prefix=b"inner"))])
        r = m.one(encode("txn", outer))
        self.assertEqual(r.txn.responses[0].incr.value, 1)
        self.assertTrue(r.txn.responses[1].txn.succeeded)
        self.assertEqual([kv.value for kv in r.txn.responses[2].range.kvs], [b"yes"])
        self.assertEqual(r.header.revision, 1)

    def test_incr(self):
        m = self.m
        self.assertEqual(m.one(encode("incr", pb.IncrRequest(key=b"c", delta=5))).incr.value, 5)
        self.assertEqual(m.one(encode("incr", pb.IncrRequest(key=b"c", delta=-7))).incr.value, -2)
        self.assertEqual(self.kv(b"c").value, b"-2")
        m.apply(encode_put(b"big", b"%d" % (2 ** 63 - 1)))
        over = m.one(encode("incr", pb.IncrRequest(key=b"big", delta=1)))
        self.assertEqual(over.error.code, pb.INVALID_ARGUMENT)
        self.assertIn("overflows", over.error.message)

    def test_sequential_keys_are_never_reused(self):
        m = self.m
        seq = pb.PutSequentialRequest(prefix=b"queue/", value=b"job")
        first = m.one(encode("put_sequential", seq)).put_sequential.key
        self.assertEqual(first, b"queue/%020d" % 1)
        m.apply(encode_delete(first))
        m.one(encode("compact", pb.CompactRequest(revision=2)))
        m.restart()
        second = m.one(encode("put_sequential", seq)).put_sequential.key
        self.assertGreater(second, first)

    # ---------------------------------------------------- exactly-once ---

    def test_retried_txn_applies_once_and_gets_the_first_answer(self):
        m = self.m
        body = txn([], [incr_op(b"n", 1)])
        data = encode("txn", body, client_id=4, seq=1, ack_floor=1)
        first = m.one(data)
        m.restart()
        again = m.one(data)
        self.assertEqual(again, first)
        self.assertEqual(self.kv(b"n").value, b"1")

    def test_retry_of_an_evicted_session_is_refused_not_applied(self):
        m = self.m
        self.patch(sessions, "MAX_SESSIONS", 2)
        m.apply(encode("incr", pb.IncrRequest(key=b"n", delta=1), client_id=1, seq=1, ack_floor=1))
        for cid in (2, 3):
            m.apply(encode_put(b"x", b"y", client_id=cid, seq=1, ack_floor=1))
        self.assertNotIn(1, m.sm.sessions.sessions)
        # Client 1's retry of seq 2, its seq 1 answered (floor 2).
        r = m.one(encode("incr", pb.IncrRequest(key=b"n", delta=1), client_id=1, seq=2, ack_floor=2))
        self.assertEqual(r.error.code, pb.SESSION_EXPIRED)
        self.assertIn("outcome of this write is unknown", r.error.message)
        self.assertEqual(self.kv(b"n").value, b"1")


class _Restores:
    def test_snapshot_into_every_backend_keeps_history_and_revision(self):
        m = self.m
        m.apply(encode_put(b"a", b"1"), encode_put(b"a", b"2"), encode_delete(b"a"), encode_put(b"b", b"3"))
        m.one(encode("compact", pb.CompactRequest(revision=2)))
        for backend in ("memory", "lmdb", "btree"):
            other = Model(self, backend)
            self.addCleanup(other.close)
            other.sm.restore(m.sm.snapshot_chunks())
            self.assertEqual((other.sm.revision, other.sm.compact_revision), (4, 2))
            self.assertEqual(other.sm.get_kv(b"a", 2).value, b"2")
            self.assertIsNone(other.sm.get_kv(b"a"))
            self.assertEqual(other.sm.scan(), [(b"b", b"3")])


class MemoryDataModel(_DataModel, _Restores, SynchronousTestCase):
    backend = "memory"


class MemoryWriteBehindDataModel(_DataModel, SynchronousTestCase):
    backend = "memory"
    write_behind = 1000


class LMDBDataModel(_DataModel, _Restores, SynchronousTestCase):
    backend = "lmdb"


class LMDBWriteBehindDataModel(_DataModel, SynchronousTestCase):
    backend = "lmdb"
    write_behind = 1000


class BTreeDataModel(_DataModel, SynchronousTestCase):
    backend = "btree"


class UpgradeTests(SynchronousTestCase):
    def test_a_store_written_before_revisions_keeps_its_keys(self):
        storage = MemoryStorage()
        storage.apply_batch([(b"a", b"1"), (b"b", b"2")], [], 7)
        sm = KVStateMachine(storage)
        self.assertEqual(sm.scan(), [(b"a", b"1"), (b"b", b"2")])
        self.assertEqual((sm.revision, sm.get_kv(b"a").version, storage.applied_index()), (1, 1, 7))
        self.assertIsNone(storage.get(b"a"))  # now in history only


class ValidationTests(SynchronousTestCase):
    """The checks a write passes before it is proposed (INVALID_ARGUMENT,
    nothing replicated)."""

    def check(self, body, message):
        with self.assertRaises(errors.InvalidArgument) as e:
            commands.check_txn(body)
        self.assertIn(message, str(e.exception))

    def test_overlapping_writes_are_refused(self):
        self.check(txn([], [put_op(b"k", b"1"), put_op(b"k", b"2")]), "may not overlap")
        self.check(txn([], [("delete", pb.DeleteRequest(key=b"a", range_end=b"c")), put_op(b"b", b"1")]),
                   "may not overlap")
        self.check(txn([], [("delete", pb.DeleteRequest(key=b"a", range_end=b"c")),
                            ("delete", pb.DeleteRequest(key=b"b", range_end=b"d"))]), "may not overlap")
        self.check(txn([], [("delete", pb.DeleteRequest(key=b"a", range_end=b"\x00")),
                            incr_op(b"zzz", 1)]), "may not overlap")
        nested = txn([], [put_op(b"k", b"1")], [put_op(b"j", b"1")])
        self.check(txn([], [("txn", nested), put_op(b"j", b"2")]), "may not overlap")
        # Writes in the two branches of one txn never both run: allowed.
        commands.check_txn(txn([], [put_op(b"k", b"1")], [put_op(b"k", b"2")]))

    def test_malformed_compares_are_refused(self):
        self.check(txn([C(key=b"k", target=C.VALUE, result=C.EQUAL, version=3)]), "value given is a version")
        self.check(txn([C(key=b"k", target=9, result=C.EQUAL)]), "unknown target")
        self.check(txn([C(key=b"k", target=C.MOD, result=7)]), "unknown operator")
        self.check(txn([C(key=b"", target=C.MOD)]), "must not be empty")

    def test_too_many_ops_are_refused(self):
        ops = [put_op(b"k%d" % i, b"v") for i in range(commands.MAX_TXN_OPS + 1)]
        self.check(txn([], ops), "at most %d ops" % commands.MAX_TXN_OPS)

    def test_the_leader_refuses_a_bad_command_from_a_follower(self):
        bad = encode("txn", txn([], [put_op(b"k", b"1"), put_op(b"k", b"2")]))
        with self.assertRaises(errors.InvalidArgument):
            commands.check_command(bad)
        commands.check_command(encode("incr", pb.IncrRequest(key=b"k", delta=1)))

