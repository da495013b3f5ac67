"""The replicated key-value state machine: batches, results, and the
deduplication table that applies a retried write at most once."""

import threading

from twisted.trial.unittest import SynchronousTestCase

from geocachedb import sessions
from geocachedb.raft.types import Entry
from geocachedb.commands import response_of
from geocachedb.statemachine import KVStateMachine, encode_delete, encode_put
from geocachedb.wire import geocache_pb2 as pb
from geocachedb.storage.lmdb import LMDBStorage
from geocachedb.storage.memory import MemoryStorage
from tests.raft_helpers import stored_value


class ApplyTests(SynchronousTestCase):
    def setUp(self):
        self.sm = KVStateMachine(MemoryStorage())

    def apply(self, *datas, start=1):
        results = self.sm.apply([Entry(start + i, 1, d) for i, d in enumerate(datas)])
        return [None if r is None else response_of(r) for r in results]

    def test_one_batch_later_operations_win(self):
        results = self.apply(encode_put(b"a", b"1"), encode_delete(b"a"), encode_delete(b"a"), b"", encode_put(b"a", b"2"))
        self.assertEqual(
            [r.WhichOneof("body") if r else None for r in results],
            ["put", "delete", "delete", None, "put"],
        )
        self.assertEqual((results[1].delete.deleted, results[2].delete.deleted), (True, False))
        # Revisions move for changes only: the no-op delete and the
        # leader's empty entry make none.
        self.assertEqual([r.header.revision if r else None for r in results], [1, 2, 2, None, 3])
        self.assertEqual(self.sm.get(b"a"), b"2")
        self.assertEqual(self.sm.applied_index, 5)

    def test_retried_put_is_applied_once(self):
        self.apply(encode_put(b"k", b"first", client_id=7, seq=1, ack_floor=1))
        self.apply(encode_put(b"k", b"other client"), start=2)
        results = self.apply(encode_put(b"k", b"first", client_id=7, seq=1, ack_floor=1), start=3)
        self.assertEqual(self.sm.get(b"k"), b"other client")
        self.assertEqual(results[0].put.index, 1)  # the original application
        self.assertEqual(results[0].put.revision, 1)

    def test_retried_delete_keeps_its_original_answer(self):
        self.apply(encode_put(b"k", b"v"))
        first = self.apply(encode_delete(b"k", client_id=9, seq=1, ack_floor=1), start=2)
        again = self.apply(encode_delete(b"k", client_id=9, seq=1, ack_floor=1), start=3)
        self.assertTrue(first[0].delete.deleted)
        self.assertEqual(again[0], first[0])
        self.assertEqual(self.sm.revision, 2)

    def test_pipelined_writes_may_commit_out_of_order(self):
        self.apply(encode_put(b"b", b"2", client_id=5, seq=2, ack_floor=1))
        self.apply(encode_put(b"a", b"1", client_id=5, seq=1, ack_floor=1), start=2)
        self.assertEqual(self.sm.get(b"a"), b"1")  # seq 1 was new, not a duplicate

    def test_floor_forgets_answered_writes_and_refuses_them(self):
        for seq in range(1, 6):
            self.apply(encode_put(b"k%d" % seq, b"v", client_id=3, seq=seq, ack_floor=seq), start=seq)
        session = self.sm.sessions.sessions[3]
        self.assertEqual(sorted(session.results), [5])
        self.apply(encode_put(b"k1", b"replayed", client_id=3, seq=1, ack_floor=1), start=6)
        self.assertEqual(self.sm.get(b"k1"), b"v")

    def test_table_survives_restart(self):
        path = self.mktemp()
        sm = KVStateMachine(LMDBStorage(path))
        sm.apply([Entry(1, 1, encode_put(b"k", b"v1", client_id=11, seq=1, ack_floor=1))])
        sm.apply([Entry(2, 1, encode_put(b"k", b"v2"))])
        sm.storage.close()
        sm = KVStateMachine(LMDBStorage(path))
        self.addCleanup(sm.storage.close)
        sm.apply([Entry(3, 1, encode_put(b"k", b"v1", client_id=11, seq=1, ack_floor=1))])
        self.assertEqual(sm.get(b"k"), b"v2")

    def test_sessions_are_hidden_from_scans(self):
        self.apply(encode_put(b"\x00a", b"1", client_id=1, seq=1, ack_floor=1),
                   encode_put(b"\x00z", b"2", client_id=2, seq=1, ack_floor=1),
                   encode_put(b"b", b"3", client_id=3, seq=1, ack_floor=1))
        self.assertEqual([k for k, _ in self.sm.scan()], [b"\x00a", b"\x00z", b"b"])
        self.assertEqual([k for k, _ in self.sm.scan(limit=2)], [b"\x00a", b"\x00z"])
        self.assertEqual([k for k, _ in self.sm.scan(start=b"\x00b", limit=1)], [b"\x00z"])
        self.assertEqual(self.sm.scan(prefix=b"\x00\x00"), [])

    def test_least_recently_used_sessions_are_evicted(self):
        self.patch(sessions, "MAX_SESSIONS", 3)
        for cid in range(1, 6):
            self.apply(encode_put(b"k", b"v", client_id=cid, seq=1, ack_floor=1), start=cid)
        self.assertEqual(sorted(self.sm.sessions.sessions), [3, 4, 5])
        stored = self.sm.storage.scan(prefix=sessions.SESSION_PREFIX)
        self.assertEqual(len(stored), 3)

    def test_session_record_round_trip(self):
        results = {4: pb.Response(put=pb.PutResponse(index=90, revision=7)),
                   6: pb.Response(txn=pb.TxnResponse(succeeded=True))}
        s = sessions.ClientSession(4, 99, results)
        back = sessions.ClientSession.decode(s.encode())
        self.assertEqual((back.floor, back.last_index, back.results), (4, 99, s.results))

    def test_session_record_written_before_revisions_still_answers_retries(self):
        import struct
        v1 = struct.pack(">QQI", 4, 99, 2) + struct.pack(">QBQ?", 4, 1, 90, False) \
            + struct.pack(">QBQ?", 6, 2, 95, True)
        back = sessions.ClientSession.decode(v1)
        self.assertEqual((back.floor, back.last_index), (4, 99))
        self.assertEqual(back.results[4].put.index, 90)
        self.assertTrue(back.results[6].delete.deleted)


class _Runner:
    """A background runner the test drives.  ``threaded``: the work starts
    in a real thread at once, as in the node; otherwise `run()` does the
    queued work here.  `finish()` runs the completions."""

    def __init__(self, threaded=False):
        self.threaded = threaded
        self.queued = []
        self.threads = []

    def __call__(self, work, done):
        self.queued.append((work, done))
        if self.threaded:
            t = threading.Thread(target=work)
            t.start()
            self.threads.append(t)

    def run(self):
        if not self.threaded:
            for work, _ in self.queued:
                work()

    def finish(self):
        for t in self.threads:
            t.join(10)
        queued, self.queued = self.queued, []
        for _, done in queued:
            done()


class WriteBehindTests(SynchronousTestCase):
    """Applied writes wait in memory and reach storage in one transaction
    per flush; with a background runner the transaction runs in another
    thread while reads go on (`KVStateMachine`)."""

    def setUp(self):
        self.storage = LMDBStorage(self.mktemp())
        self.addCleanup(self.storage.close)
        self.runner = _Runner()
        self.sm = KVStateMachine(self.storage, write_behind=1000, background=self.runner)

    def put(self, index, key, value):
        self.sm.apply([Entry(index, 1, encode_put(key, value))])

    def test_applied_writes_are_readable_before_they_reach_storage(self):
        self.put(1, b"a", b"1")
        self.assertEqual(self.sm.get(b"a"), b"1")
        self.assertIsNone(stored_value(self.storage, b"a"))
        self.assertEqual(self.sm.applied_index, 1)
        self.assertEqual(self.sm.durable_index, 0)

    def test_a_background_batch_stays_readable_until_written(self):
        self.put(1, b"a", b"1")
        self.sm.flush_in_background()
        self.put(2, b"b", b"2")
        self.assertEqual((self.sm.get(b"a"), self.sm.get(b"b")), (b"1", b"2"))
        self.assertEqual(self.sm.applied_index, 2)
        self.sm.flush_in_background()  # one batch in flight at a time
        self.assertEqual(len(self.runner.queued), 1)
        self.runner.run()
        self.runner.finish()
        self.assertEqual(stored_value(self.storage, b"a"), b"1")
        self.assertIsNone(stored_value(self.storage, b"b"))
        self.assertEqual(self.storage.applied_index(), 1)
        self.assertEqual(self.sm.get(b"b"), b"2")
        # The last transaction counts as durable only after the next one.
        self.assertEqual(self.sm.durable_index, 0)
        self.sm.flush()
        self.assertEqual(self.storage.applied_index(), 2)
        self.assertEqual(self.sm.durable_index, 1)

    def test_flush_waits_for_the_batch_in_flight_and_keeps_the_order(self):
        self.runner.threaded = True
        self.put(1, b"k", b"old")
        self.sm.flush_in_background()
        self.put(2, b"k", b"new")
        self.sm.flush()  # waits for the thread, then writes index 2
        self.assertEqual(stored_value(self.storage, b"k"), b"new")
        self.assertEqual(self.storage.applied_index(), 2)
        self.runner.finish()  # the late completion changes nothing
        self.assertEqual(stored_value(self.storage, b"k"), b"new")
        self.assertEqual(self.sm.applied_index, 2)

    def test_a_failed_background_write_is_retried_under_newer_writes(self):
        real = self.storage.apply_batch
        calls = []

        def fail_once(puts, deletes, index):
            calls.append(index)
            if len(calls) == 1:
                raise OSError("disk hiccup")
            real(puts, deletes, index)

        self.storage.apply_batch = fail_once
        self.put(1, b"a", b"from batch 1")
        self.put(2, b"b", b"from batch 1")
        self.sm.flush_in_background()
        self.put(3, b"b", b"newer")
        self.runner.run()
        self.runner.finish()
        self.assertEqual(calls, [2, 3])
        self.assertEqual(stored_value(self.storage, b"a"), b"from batch 1")
        self.assertEqual(stored_value(self.storage, b"b"), b"newer")
        self.assertEqual(self.storage.applied_index(), 3)

    def test_a_full_map_grows_on_the_main_thread(self):
        storage = LMDBStorage(self.mktemp(), map_size=64 * 1024)
        self.addCleanup(storage.close)
        runner = _Runner(threaded=True)
        sm = KVStateMachine(storage, write_behind=100000, background=runner)
        value = b"x" * 1000
        sm.apply([Entry(i, 1, encode_put(b"k%05d" % i, value)) for i in range(1, 501)])
        sm.flush_in_background()
        runner.finish()
        self.assertEqual(storage.applied_index(), 500)
        self.assertEqual(stored_value(storage, b"k00500"), value)

    def test_a_full_map_is_not_grown_off_the_main_thread(self):
        storage = LMDBStorage(self.mktemp(), map_size=64 * 1024)
        self.addCleanup(storage.close)
        errors = []

        def write():
            try:
                storage.apply_batch([(b"k%05d" % i, b"x" * 1000) for i in range(500)], [], 1)
            except Exception as e:
                errors.append(e)

        t = threading.Thread(target=write)
        t.start()
        t.join(10)
        self.assertEqual([type(e).__name__ for e in errors], ["MapFullError"])
        self.assertEqual(storage.applied_index(), 0)

    def test_without_concurrent_writes_the_flush_is_synchronous(self):
        runner = _Runner()
        sm = KVStateMachine(MemoryStorage(), write_behind=1000, background=runner)
        sm.apply([Entry(1, 1, encode_put(b"a", b"1"))])
        sm.flush_in_background()
        self.assertEqual(runner.queued, [])
        self.assertEqual(stored_value(sm.storage, b"a"), b"1")

    def test_a_full_overlay_starts_a_background_flush(self):
        sm = KVStateMachine(self.storage, write_behind=3, background=self.runner)
        sm.apply([Entry(i, 1, encode_put(b"k%d" % i, b"v")) for i in range(1, 4)])
        self.assertEqual(len(self.runner.queued), 1)
        self.assertEqual(self.storage.applied_index(), 0)
        self.runner.run()
        self.runner.finish()
        self.assertEqual(self.storage.applied_index(), 3)

    def test_an_overlay_twice_full_is_written_at_once(self):
        # Bounded memory: one batch in flight, and the next written (after
        # it) as soon as it holds twice the limit.
        runner = _Runner(threaded=True)
        sm = KVStateMachine(self.storage, write_behind=3, background=runner)
        sm.apply([Entry(i, 1, encode_put(b"k%d" % i, b"v")) for i in range(1, 4)])
        sm.apply([Entry(i, 1, encode_put(b"k%d" % i, b"v")) for i in range(4, 10)])
        self.assertEqual(self.storage.applied_index(), 9)
        runner.finish()
        self.assertEqual(sm.applied_index, 9)
