"""The B+Tree backend against a dict, as a hypothesis state machine.

Rules put, delete, run batches (small hand-picked ones and large seeded
ones, with the applied index), scan with every argument form, read and load
snapshots (some kept open across later commits), reopen, and send bad input; after every step the file must pass
the checker and hold exactly the model.

Keys come from a small pool so that puts overwrite and deletes hit.  Pool
keys share long prefixes of varying length (so separators stay long and
branches narrow), and values range from empty to overflow-sized, which
makes deep trees, splits, merges and overflow chains appear within a few
dozen steps even with 4 KiB pages.  The cache and the spill threshold are
tiny so eviction and early writes are exercised too.
"""

import os
import random
import shutil
import tempfile

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from geocachedb import snapshot_format
from geocachedb.storage.btree import BTreeStorage
from geocachedb.storage.btree.node import MAX_KEY

POOL = 700


def pool_key(i):
    pad = 20 + (i * 37) % 380
    return b"k" * pad + b"%05d" % i


keys = st.one_of(
    st.integers(0, POOL - 1).map(pool_key),
    st.binary(min_size=1, max_size=MAX_KEY),
)
values = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=200, max_size=900),
    st.binary(min_size=900, max_size=9000),  # overflow chains
)


def seeded_value(rng):
    r = rng.random()
    if r < 0.05:
        return rng.randbytes(rng.randrange(1000, 20000))
    if r < 0.15:
        return b""
    return rng.randbytes(rng.randrange(1, 800))


class BTreeAgainstDict(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="btree-model-")
        self.store = self.open()
        self.model = {}
        self.applied = 0
        self.snapshots = []  # [(iterator, chunks read so far, expected items, applied)]

    def open(self):
        return BTreeStorage(self.dir, cache_pages=64, spill_pages=64)

    def teardown(self):
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(key=keys, value=values)
    def put(self, key, value):
        self.store.put(key, value)
        self.model[key] = value

    @rule(key=keys)
    def delete(self, key):
        self.assertEqual(self.store.delete(key), key in self.model)
        self.model.pop(key, None)

    @rule(
        puts=st.lists(st.tuples(keys, values), max_size=20),
        deletes=st.lists(keys, max_size=20),
        with_index=st.booleans(),
    )
    def batch(self, puts, deletes, with_index):
        index = self.applied + 1 if with_index else None
        self.store.apply_batch(puts, deletes, index)
        for key, value in puts:
            self.model[key] = value
        for key in deletes:
            self.model.pop(key, None)
        if with_index:
            self.applied = index

    @rule(seed=st.integers(0, 2**32), n=st.integers(1, 300), delete_share=st.sampled_from([0.0, 0.3, 0.9]))
    def big_batch(self, seed, n, delete_share):
        rng = random.Random(seed)
        ids = [rng.randrange(POOL) for _ in range(n)]
        puts = [(pool_key(i), seeded_value(rng)) for i in ids if rng.random() >= delete_share]
        deletes = [pool_key(i) for i in ids if rng.random() < delete_share]
        self.applied += 1
        self.store.apply_batch(puts, deletes, self.applied)
        for key, value in puts:
            self.model[key] = value
        for key in deletes:
            self.model.pop(key, None)

    @rule(seed=st.integers(0, 2**32))
    def delete_most(self, seed):
        rng = random.Random(seed)
        doomed = [k for k in sorted(self.model) if rng.random() < 0.85]
        self.store.apply_batch([], doomed, None)
        for key in doomed:
            del self.model[key]

    @rule(key=keys)
    def get(self, key):
        self.assertEqual(self.store.get(key), self.model.get(key))

    @rule(start=st.binary(max_size=6), end=st.one_of(st.none(), st.binary(max_size=6)), limit=st.one_of(st.none(), st.integers(0, 30)))
    def scan_range(self, start, end, limit):
        hi = end if end else None
        expected = [(k, v) for k, v in sorted(self.model.items()) if k >= start and (hi is None or k < hi)]
        if limit is not None:
            expected = expected[:limit]
        self.assertEqual(self.store.scan(start, end, limit=limit), expected)

    @rule(prefix=st.one_of(st.binary(min_size=1, max_size=3), st.just(b"k" * 30)))
    def scan_prefix(self, prefix):
        expected = [(k, v) for k, v in sorted(self.model.items()) if k.startswith(prefix)]
        self.assertEqual(self.store.scan(prefix=prefix), expected)

    @rule(key=keys, value=values)
    def snapshot_is_a_frozen_view(self, key, value):
        before = sorted(self.model.items())
        chunks = self.store.snapshot_out()
        doomed = list(self.model)[:3]
        self.store.apply_batch([(key, value)], doomed, None)
        self.model[key] = value  # puts first, then deletes
        for k in doomed:
            self.model.pop(k, None)
        reader = snapshot_format.SnapshotReader(chunks)
        self.assertEqual(list(reader.items()), before)

    @precondition(lambda self: len(self.snapshots) < 3)
    @rule(read_one=st.booleans())
    def open_a_snapshot_and_keep_it(self, read_one):
        # Held across the following steps: pages freed meanwhile must stay
        # put until it is finished, with several readers of different ages.
        chunks = self.store.snapshot_out()
        first = [next(chunks)] if read_one else []
        self.snapshots.append((chunks, first, sorted(self.model.items()), self.applied))

    @precondition(lambda self: self.snapshots)
    @rule(which=st.integers(0, 2))
    def finish_a_kept_snapshot(self, which):
        chunks, read, expected, applied = self.snapshots.pop(which % len(self.snapshots))
        reader = snapshot_format.SnapshotReader(read + list(chunks))
        self.assertEqual(list(reader.items()), expected)
        self.assertEqual(reader.applied_index, applied)

    @rule(seed=st.integers(0, 2**32))
    def snapshot_in(self, seed):
        rng = random.Random(seed)
        new = {pool_key(i): seeded_value(rng) for i in rng.sample(range(POOL), rng.randrange(0, 200))}
        self.applied += 1
        self.store.snapshot_in(snapshot_format.encode(self.applied, sorted(new.items())))
        self.model = new

    @rule()
    def snapshot_round_trip_into_itself(self):
        self.store.snapshot_in(self.store.snapshot_out())

    @rule(key=keys)
    def bad_batch_changes_nothing(self, key):
        with self.assertRaises(ValueError):
            self.store.apply_batch([(key, b"x")], [b""], self.applied + 1)
        with self.assertRaises(ValueError):
            self.store.apply_batch([(b"x" * (MAX_KEY + 1), b"x")], [], self.applied + 1)

    @precondition(lambda self: self.model)
    @rule()
    def reopen(self):
        self.store.close()
        for chunks, _, _, _ in self.snapshots:
            with self.assertRaises(RuntimeError):
                next(chunks)
        self.snapshots = []
        self.store = self.open()

    @invariant()
    def file_passes_the_checker_and_matches_the_model(self):
        report = self.store.check()
        # No crash here, so not even a warning (the fallback tree intact).
        self.assertEqual((report.problems, report.warnings), ([], []))
        event("tree depth %d" % report.info["depth"])
        self.assertEqual(self.store.stats()["keys"], len(self.model))
        self.assertEqual(self.store.applied_index(), self.applied)
        self.assertEqual(self.store.scan(), sorted(self.model.items()))

    def assertEqual(self, a, b):
        assert a == b, "%r != %r" % (a if len(repr(a)) < 400 else repr(a)[:400], b if len(repr(b)) < 400 else repr(b)[:400])

    def assertRaises(self, exc):
        import contextlib

        @contextlib.contextmanager
        def raises():
            try:
                yield
            except exc:
                return
            raise AssertionError("%s not raised" % exc.__name__)

        return raises()


BTreeAgainstDict.TestCase.settings = settings(
    # BTREE_MODEL_EXAMPLES=500 for a longer hunt; the default keeps CI fast.
    max_examples=int(os.environ.get("BTREE_MODEL_EXAMPLES", 60)),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestBTreeAgainstDict = BTreeAgainstDict.TestCase
