"""The replicated key-value state machine: batches, results, and the
deduplication table that applies a retried write at most once."""

import os

from twisted.trial.unittest import SynchronousTestCase

from geocachedb import sessions
from geocachedb.raft.types import Entry
from geocachedb.statemachine import DeleteResult, KVStateMachine, PutResult, encode_delete, encode_put
from geocachedb.storage.lmdb import LMDBStorage
from geocachedb.storage.memory import MemoryStorage


class ApplyTests(SynchronousTestCase):
    def setUp(self):
        self.sm = KVStateMachine(MemoryStorage())

    def apply(self, *datas, start=1):
        return self.sm.apply([Entry(start + i, 1, d) for i, d in enumerate(datas)])

    def test_one_batch_later_operations_win(self):
        results = self.apply(encode_put(b"a", b"1"), encode_delete(b"a"), encode_delete(b"a"), b"", encode_put(b"a", b"2"))
        self.assertEqual(
            [type(r).__name__ if r else None for r in results],
            ["PutResult", "DeleteResult", "DeleteResult", None, "PutResult"],
        )
        self.assertEqual((results[1].deleted, results[2].deleted), (True, False))
        self.assertEqual(self.sm.get(b"a"), b"2")
        self.assertEqual(self.sm.applied_index, 5)

    def test_retried_put_is_applied_once(self):
        self.apply(encode_put(b"k", b"first", client_id=7, seq=1, ack_floor=1))
        self.apply(encode_put(b"k", b"other client"), start=2)
        results = self.apply(encode_put(b"k", b"first", client_id=7, seq=1, ack_floor=1), start=3)
        self.assertEqual(self.sm.get(b"k"), b"other client")
        self.assertIsInstance(results[0], PutResult)
        self.assertEqual(results[0].index, 1)  # the original application

    def test_retried_delete_keeps_its_original_answer(self):
        self.apply(encode_put(b"k", b"v"))
        first = self.apply(encode_delete(b"k", client_id=9, seq=1, ack_floor=1), start=2)
        again = self.apply(encode_delete(b"k", client_id=9, seq=1, ack_floor=1), start=3)
        self.assertTrue(first[0].deleted)
        self.assertIsInstance(again[0], DeleteResult)
        self.assertTrue(again[0].deleted)

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
        s = sessions.ClientSession(4, 99, {4: (sessions.PUT, 90, False), 6: (sessions.DELETE, 95, True)})
        back = sessions.ClientSession.decode(s.encode())
        self.assertEqual((back.floor, back.last_index, back.results), (4, 99, s.results))
