"""`BTreeStorage`: the IStorage face of our own B+Tree (``--storage btree``).

A store lives in one file, ``<path>/data.btree`` (``path`` is a directory,
as for LMDB).  Each write call is one pager transaction and one commit:
`apply_batch` puts, deletes and records the applied index in the meta page
of the same commit, so they survive a crash together or not at all.
Arguments are checked before the transaction starts, and any error inside
one aborts it, so a failed call changes nothing.

`snapshot_out` pins the committed root (see `Pager.pin`) and streams from
it lazily; `snapshot_in` frees the old tree and bulk-loads the new one in a
single transaction, so a bad snapshot (ValueError from the reader, checked
only at its end) leaves the old content in place.
"""

import os
import weakref

from twisted.logger import Logger
from zope.interface import implementer

from geocachedb.interfaces import IStorage
from geocachedb import snapshot_format
from geocachedb.storage import check_key
from geocachedb.storage.btree.node import MAX_KEY
from geocachedb.storage.btree.pager import DEFAULT_CACHE_PAGES, DEFAULT_SPILL_PAGES, Pager
from geocachedb.storage.btree.tree import BTree
from geocachedb.storage.scan import bounds

FILENAME = "data.btree"

log = Logger()


def _key(key):
    check_key(key)
    key = bytes(key)
    if len(key) > MAX_KEY:
        raise ValueError("key of %d bytes is longer than the %d-byte limit" % (len(key), MAX_KEY))
    return key


@implementer(IStorage)
class BTreeStorage:
    name = "btree"
    # One page cache, one thread.
    concurrent_writes = False

    def __init__(
        self,
        path,
        sync=True,
        cache_pages=DEFAULT_CACHE_PAGES,
        spill_pages=DEFAULT_SPILL_PAGES,
        **options,
    ):
        # Unknown options (e.g. LMDB's map_size) are ignored so that a node
        # can switch backends without changing its option set.
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.file = os.path.join(path, FILENAME)
        self._pager = Pager(self.file, sync=sync, cache_pages=cache_pages, spill_pages=spill_pages)
        self._tree = BTree(self._pager)
        if self._pager.recovery:
            log.warn("{file}: {note}", file=self.file, note=self._pager.recovery)

    def _write(self, work):
        pager = self._pager
        pager.begin()
        try:
            result = work()
        except BaseException:
            pager.abort()
            raise
        pager.commit()
        return result

    def get(self, key):
        self._pager.check_usable()
        return self._tree.get(bytes(key))

    def put(self, key, value):
        self._pager.check_usable()
        key = _key(key)
        value = bytes(value)
        self._write(lambda: self._tree.put(key, value))

    def delete(self, key):
        self._pager.check_usable()
        key = _key(key)
        # A missing key changes nothing, so it costs no commit.
        if not self._tree.contains(key):
            return False
        return self._write(lambda: self._tree.delete(key))

    def scan(self, start=b"", end=None, prefix=None, limit=None):
        self._pager.check_usable()
        lo, hi = bounds(start, end, prefix)
        if hi is not None and hi <= lo:
            return []
        return self._tree.scan(lo, hi, limit)

    def apply_batch(self, puts, deletes, applied_index=None):
        self._pager.check_usable()
        puts = [(_key(k), bytes(v)) for k, v in puts]
        deletes = [_key(k) for k in deletes]
        if applied_index is not None:
            applied_index = int(applied_index)
            if not 0 <= applied_index < 2**64:
                raise ValueError("applied index %d is outside 0 .. 2**64-1" % applied_index)
        # Sorted (stably, so the last put of a key still wins), consecutive
        # puts walk the same path and find its nodes already copied.
        puts.sort(key=lambda kv: kv[0])
        tree = self._tree
        pager = self._pager

        def work():
            for key, value in puts:
                tree.put(key, value)
                pager.maybe_spill()
            for key in deletes:
                tree.delete(key)
                pager.maybe_spill()
            if applied_index is not None:
                pager.applied = applied_index

        self._write(work)

    def applied_index(self):
        self._pager.check_usable()
        return self._pager.applied

    def snapshot_out(self):
        self._pager.check_usable()
        pin = self._pager.pin()
        items = self._tree.items(pin.root)
        return _PinnedChunks(self._pager, pin, snapshot_format.encode(self._pager.applied, items))

    def snapshot_in(self, chunks):
        self._pager.check_usable()
        reader = snapshot_format.SnapshotReader(chunks)
        tree = self._tree
        pager = self._pager

        def checked(items):
            prev = None
            for key, value in items:
                if len(key) > MAX_KEY:
                    raise ValueError("snapshot holds a key of %d bytes (limit %d)" % (len(key), MAX_KEY))
                if prev is not None and key <= prev:
                    raise ValueError("snapshot keys are not in ascending order")
                prev = key
                yield key, value

        def work():
            tree.free_tree(pager.root)
            # The reader raises ValueError at the very end for a bad
            # checksum: that aborts this transaction like any other error.
            tree.bulk_load(checked(reader.items()))
            pager.applied = reader.applied_index

        self._write(work)

    def stats(self):
        self._pager.check_usable()
        stats = self._pager.stats()
        stats["keys"] = self._pager.keys
        stats["file"] = self.file
        return stats

    def check(self):
        """Run the checker on this store's file; return its report."""
        from geocachedb.storage.btree.check import check_file

        self._pager.check_usable()
        return check_file(self.file, lock=False)

    def close(self):
        self._pager.close()


class _PinnedChunks:
    """The snapshot iterator: holds the pin until exhausted, closed or
    garbage collected (a generator's ``finally`` would not run if it was
    never started)."""

    def __init__(self, pager, pin, chunks):
        self._pager = pager
        self._chunks = chunks
        self._release = weakref.finalize(self, pager.unpin, pin)

    def __iter__(self):
        return self

    def __next__(self):
        if self._chunks is None:
            raise StopIteration
        if self._pager.closed:
            self.close()
            raise RuntimeError("storage was closed while a snapshot was being read")
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self):
        self._chunks = None
        self._release()
