"""One conformance suite for every registered IStorage backend.

A new backend only has to register itself in `geocachedb.storage.BACKENDS`:
a TestCase class per backend is generated below, so trial and pytest both
run the whole contract against it.
"""

import os
import random

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from geocachedb import storage
from geocachedb.interfaces import IStorage
from geocachedb import snapshot_format

PERSISTENT = {"memory": False}  # every other backend must survive reopen


class StorageContract:
    backend = None

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.store = self.open()

    def tearDown(self):
        try:
            self.store.close()
        except Exception:
            pass

    def open(self, name="store"):
        return storage.open_storage(self.backend, os.path.join(self.dir, name))

    def reopen(self):
        self.store.close()
        self.store = self.open()

    def test_provides_istorage(self):
        self.assertTrue(verifyObject(IStorage, self.store))
        self.assertEqual(self.store.name, self.backend)

    def test_get_missing_is_none(self):
        self.assertIsNone(self.store.get(b"nope"))

    def test_put_get_delete(self):
        self.store.put(b"k", b"v")
        self.assertEqual(self.store.get(b"k"), b"v")
        self.store.put(b"k", b"v2")
        self.assertEqual(self.store.get(b"k"), b"v2")
        self.assertTrue(self.store.delete(b"k"))
        self.assertIsNone(self.store.get(b"k"))
        self.assertFalse(self.store.delete(b"k"))

    def test_empty_key_rejected_and_nothing_changes(self):
        self.store.put(b"a", b"1")
        self.assertRaises(ValueError, self.store.put, b"", b"v")
        self.assertRaises(ValueError, self.store.delete, b"")
        self.assertRaises(
            ValueError, self.store.apply_batch, [(b"b", b"2"), (b"", b"x")], [], 7
        )
        self.assertRaises(ValueError, self.store.apply_batch, [(b"b", b"2")], [b""], 7)
        self.assertEqual(self.store.scan(), [(b"a", b"1")])
        self.assertEqual(self.store.applied_index(), 0)

    def test_binary_keys_and_values(self):
        rng = random.Random(1)
        pairs = {}
        for _ in range(200):
            key = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
            pairs[key] = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        pairs[b"\x00"] = b"\x00\xff"
        pairs[b"\xff" * 511] = b""
        self.store.apply_batch(pairs.items(), [], 1)
        for key, value in pairs.items():
            self.assertEqual(self.store.get(key), value)
        self.assertEqual(self.store.scan(), sorted(pairs.items()))

    def test_one_mebibyte_values(self):
        big = os.urandom(1024 * 1024)
        self.store.put(b"big", big)
        self.store.apply_batch([(b"big2", big[::-1])], [], 3)
        self.reopen_if_persistent()
        self.assertEqual(self.store.get(b"big"), big)
        self.assertEqual(self.store.get(b"big2"), big[::-1])

    def reopen_if_persistent(self):
        if PERSISTENT.get(self.backend, True):
            self.reopen()

    def fill(self):
        keys = [b"a", b"ab", b"abc", b"abd", b"b", b"b\x00", b"b\xff", b"c", b"\xff", b"\xff\xff"]
        self.store.apply_batch([(k, k.upper()) for k in keys], [], 1)
        return keys

    def test_scan_byte_order(self):
        keys = self.fill()
        self.assertEqual([k for k, _ in self.store.scan()], sorted(keys))
        self.assertEqual(self.store.scan()[0], (b"a", b"A"))

    def test_scan_range_is_half_open(self):
        self.fill()
        self.assertEqual(
            [k for k, _ in self.store.scan(b"ab", b"b\x00")], [b"ab", b"abc", b"abd", b"b"]
        )
        self.assertEqual([k for k, _ in self.store.scan(b"c")], [b"c", b"\xff", b"\xff\xff"])
        self.assertEqual(self.store.scan(b"d", b"d"), [])

    def test_scan_prefix(self):
        self.fill()
        self.assertEqual([k for k, _ in self.store.scan(prefix=b"ab")], [b"ab", b"abc", b"abd"])
        self.assertEqual([k for k, _ in self.store.scan(prefix=b"b")], [b"b", b"b\x00", b"b\xff"])
        self.assertEqual([k for k, _ in self.store.scan(prefix=b"\xff")], [b"\xff", b"\xff\xff"])
        self.assertEqual(self.store.scan(prefix=b"zz"), [])

    def test_scan_limit(self):
        keys = self.fill()
        self.assertEqual([k for k, _ in self.store.scan(limit=3)], sorted(keys)[:3])
        self.assertEqual([k for k, _ in self.store.scan(prefix=b"a", limit=2)], [b"a", b"ab"])
        self.assertEqual(self.store.scan(limit=0), [])

    def test_batch_applies_puts_then_deletes(self):
        self.store.put(b"old", b"x")
        self.store.apply_batch([(b"n1", b"1"), (b"n2", b"2"), (b"gone", b"y")], [b"old", b"gone"], 5)
        self.assertEqual(self.store.scan(), [(b"n1", b"1"), (b"n2", b"2")])
        self.assertEqual(self.store.applied_index(), 5)

    def test_batch_is_atomic_on_bad_input(self):
        self.store.apply_batch([(b"a", b"1")], [], 1)
        self.assertRaises(TypeError, self.store.apply_batch, [(b"b", b"2"), ("str", b"x")], [], 2)
        self.assertEqual(self.store.scan(), [(b"a", b"1")])
        self.assertEqual(self.store.applied_index(), 1)

    def test_applied_index(self):
        self.assertEqual(self.store.applied_index(), 0)
        self.store.apply_batch([(b"a", b"1")], [], 10)
        self.assertEqual(self.store.applied_index(), 10)
        self.store.apply_batch([], [], 11)
        self.assertEqual(self.store.applied_index(), 11)
        self.store.apply_batch([(b"b", b"1")], [])  # no index: unchanged
        self.assertEqual(self.store.applied_index(), 11)
        self.reopen_if_persistent()
        self.assertEqual(self.store.applied_index(), 11)

    def test_reopen_keeps_data(self):
        if not PERSISTENT.get(self.backend, True):
            return  # the memory backend is documented to forget
        self.fill()
        self.store.put(b"x", b"y")
        self.store.delete(b"a")
        before = self.store.scan()
        self.reopen()
        self.assertEqual(self.store.scan(), before)
        self.assertEqual(self.store.applied_index(), 1)

    def test_snapshot_round_trip_into_fresh_store(self):
        rng = random.Random(2)
        pairs = [(os.urandom(rng.randrange(1, 30)), os.urandom(rng.randrange(0, 2000))) for _ in range(3000)]
        self.store.apply_batch(pairs, [], 42)
        chunks = list(self.store.snapshot_out())
        self.assertGreater(len(chunks), 1)  # streamed, not one blob
        other = self.open("other")
        try:
            other.put(b"stale", b"gone after snapshot_in")
            other.snapshot_in(iter(chunks))
            self.assertEqual(other.scan(), self.store.scan())
            self.assertEqual(other.applied_index(), 42)
        finally:
            other.close()

    def test_snapshot_is_consistent_while_writes_go_on(self):
        self.store.apply_batch([(b"a", b"1"), (b"b", b"2")], [], 3)
        chunks = self.store.snapshot_out()
        self.store.apply_batch([(b"c", b"3")], [b"a"], 4)
        reader = snapshot_format.SnapshotReader(chunks)
        self.assertEqual(list(reader.items()), [(b"a", b"1"), (b"b", b"2")])
        self.assertEqual(reader.applied_index, 3)

    def test_corrupt_snapshot_in_changes_nothing(self):
        self.store.apply_batch([(b"keep", b"me")], [], 9)
        source = self.open("source")
        try:
            source.apply_batch([(b"k%d" % i, b"v" * 100) for i in range(100)], [], 50)
            blob = b"".join(source.snapshot_out())
        finally:
            source.close()
        flipped = bytearray(blob)
        flipped[len(blob) // 2] ^= 0x01
        for bad in (bytes(flipped), blob[: len(blob) // 2], b"not a snapshot at all", blob + b"x"):
            self.assertRaises(ValueError, self.store.snapshot_in, [bad])
            self.assertEqual(self.store.scan(), [(b"keep", b"me")])
            self.assertEqual(self.store.applied_index(), 9)

    def test_stats(self):
        self.fill()
        stats = self.store.stats()
        self.assertEqual(stats["keys"], 10)
        self.assertIn("bytes_on_disk", stats)


for _name in storage.BACKENDS:
    _cls = type(
        "Test%sStorage" % _name.capitalize(),
        (StorageContract, SynchronousTestCase),
        {"backend": _name},
    )
    globals()[_cls.__name__] = _cls
del _name, _cls
