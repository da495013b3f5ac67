"""The in-memory backend: a dict plus a sorted key list.

For tests and the simulator only (nothing survives a restart).  It follows
the IStorage contract to the letter so that the conformance suite and the
simulator exercise the same semantics as LMDB, including the atomicity of
`apply_batch` and `snapshot_in`.
"""

import bisect

from zope.interface import implementer

from geocachedb.interfaces import IStorage
from geocachedb import snapshot_format
from geocachedb.storage import check_key, checked_batch
from geocachedb.storage.scan import bounds


@implementer(IStorage)
class MemoryStorage:
    name = "memory"
    concurrent_writes = False

    def __init__(self, path=None, **options):
        self._data = {}
        self._keys = []
        self._applied = 0
        self._closed = False

    def _check_open(self):
        if self._closed:
            raise RuntimeError("storage is closed")

    def get(self, key):
        self._check_open()
        return self._data.get(bytes(key))

    def _put(self, key, value):
        if key not in self._data:
            bisect.insort(self._keys, key)
        self._data[key] = value

    def _delete(self, key):
        if key in self._data:
            del self._data[key]
            del self._keys[bisect.bisect_left(self._keys, key)]
            return True
        return False

    def put(self, key, value):
        self._check_open()
        check_key(key)
        self._put(bytes(key), bytes(value))

    def delete(self, key):
        self._check_open()
        check_key(key)
        return self._delete(bytes(key))

    def scan(self, start=b"", end=None, prefix=None, limit=None):
        self._check_open()
        lo, hi = bounds(start, end, prefix)
        i = bisect.bisect_left(self._keys, lo)
        out = []
        while i < len(self._keys):
            key = self._keys[i]
            if hi is not None and key >= hi:
                break
            if limit is not None and len(out) >= limit:
                break
            out.append((key, self._data[key]))
            i += 1
        return out

    def apply_batch(self, puts, deletes, applied_index=None):
        self._check_open()
        puts, deletes = checked_batch(puts, deletes)
        for key, value in puts:
            self._put(key, value)
        for key in deletes:
            self._delete(key)
        if applied_index is not None:
            self._applied = applied_index

    def applied_index(self):
        self._check_open()
        return self._applied

    def snapshot_out(self):
        self._check_open()
        items = [(k, self._data[k]) for k in self._keys]
        return snapshot_format.encode(self._applied, items)

    def snapshot_in(self, chunks):
        self._check_open()
        reader = snapshot_format.SnapshotReader(chunks)
        data = dict(reader.items())
        self._data = data
        self._keys = sorted(data)
        self._applied = reader.applied_index

    def stats(self):
        return {"keys": len(self._keys), "bytes_on_disk": 0}

    def close(self):
        self._closed = True
