"""The LMDB backend (the default): an embedded, memory-mapped B+Tree.

Every write transaction is durable when it commits (LMDB's default
``sync=True``: an fsync of the data file per commit), so the replicated path,
which writes one `apply_batch` per committed Raft batch, pays one fsync per
batch.  The map starts at ``map_size`` bytes and doubles whenever a
transaction finds it full, so operators need not size it up front.

A node opens it with ``metasync=False`` (LMDB's MDB_NOMETASYNC): one fsync
per commit instead of two.  LMDB keeps its integrity; an operating-system
crash may undo the last committed batch, which the node then re-applies from
its write-ahead log (the applied index moves back with it).

Two named databases: ``data`` for the key space and ``meta`` for the applied
index, written in the same transaction as the batch it describes.
"""

import os
import struct
import threading

import lmdb
from zope.interface import implementer

from geocachedb.interfaces import IStorage
from geocachedb import snapshot_format
from geocachedb.storage import check_key, checked_batch
from geocachedb.storage.scan import bounds

_APPLIED = b"applied_index"
_U64 = struct.Struct(">Q")
# Address space, not disk: the file grows only as data is written.
DEFAULT_MAP_SIZE = 1024 * 1024 * 1024


@implementer(IStorage)
class LMDBStorage:
    name = "lmdb"
    # MVCC: readers on the reactor thread never wait for a writer thread.
    concurrent_writes = True

    def __init__(self, path, map_size=DEFAULT_MAP_SIZE, sync=True, metasync=True, **options):
        os.makedirs(path, exist_ok=True)
        self.path = path
        self._env = lmdb.open(
            path,
            map_size=map_size,
            max_dbs=2,
            sync=sync,
            metasync=sync and metasync,
            readahead=False,
            subdir=True,
        )
        self._data = self._env.open_db(b"data")
        self._meta = self._env.open_db(b"meta")

    def _write(self, work):
        """Run ``work(txn)`` in a write transaction, growing the map when it
        is full (the failed transaction is aborted and retried whole).  Off
        the main thread a full map raises MapFullError instead: growing it
        needs every other transaction of the process closed, which only the
        main thread can know (the caller retries there)."""
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return work(txn)
            except lmdb.MapFullError:
                if threading.current_thread() is not threading.main_thread():
                    raise
                size = self._env.info()["map_size"]
                self._env.set_mapsize(size * 2)

    def get(self, key):
        with self._env.begin(db=self._data, buffers=False) as txn:
            return txn.get(bytes(key))

    def put(self, key, value):
        check_key(key)
        self._write(lambda txn: txn.put(bytes(key), bytes(value), db=self._data))

    def delete(self, key):
        check_key(key)
        return self._write(lambda txn: txn.delete(bytes(key), db=self._data))

    def scan(self, start=b"", end=None, prefix=None, limit=None):
        lo, hi = bounds(start, end, prefix)
        out = []
        with self._env.begin(db=self._data) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(lo):
                return out
            for key, value in cursor:
                if hi is not None and key >= hi:
                    break
                if limit is not None and len(out) >= limit:
                    break
                out.append((key, value))
        return out

    def apply_batch(self, puts, deletes, applied_index=None):
        puts, deletes = checked_batch(puts, deletes)

        def work(txn):
            if puts:
                cursor = txn.cursor(db=self._data)
                cursor.putmulti(puts)
            for key in deletes:
                txn.delete(key, db=self._data)
            if applied_index is not None:
                txn.put(_APPLIED, _U64.pack(applied_index), db=self._meta)

        self._write(work)

    def applied_index(self):
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(_APPLIED)
        return _U64.unpack(raw)[0] if raw else 0

    def snapshot_out(self):
        # The read transaction pins one version of the tree for the whole
        # iteration, so the snapshot is consistent while writes go on.
        txn = self._env.begin(db=self._data)
        raw = txn.get(_APPLIED, db=self._meta)
        applied = _U64.unpack(raw)[0] if raw else 0

        def chunks():
            try:
                yield from snapshot_format.encode(applied, txn.cursor())
            finally:
                txn.abort()

        return chunks()

    def snapshot_in(self, chunks):
        # A full map aborts the transaction and `_write` retries it; that
        # needs the chunks again, so a one-shot iterator gets a clear error
        # instead (the default map is large and grows, so this is rare).
        replayable = iter(chunks) is not chunks

        def work(txn):
            if not replayable and work.started:
                raise ValueError(
                    "LMDB map full while loading a snapshot; restart the "
                    "node with a larger --lmdb-map-size"
                )
            work.started = True
            reader = snapshot_format.SnapshotReader(chunks)
            txn.drop(self._data, delete=False)
            cursor = txn.cursor(db=self._data)
            for key, value in reader.items():
                cursor.put(key, value, append=False)
            txn.put(_APPLIED, _U64.pack(reader.applied_index), db=self._meta)

        work.started = False
        # A ValueError from the reader propagates out of the `with` and
        # aborts the transaction: the old content stays.
        self._write(work)

    def stats(self):
        with self._env.begin(db=self._data) as txn:
            keys = txn.stat(self._data)["entries"]
        size = 0
        for name in ("data.mdb",):
            try:
                size += os.path.getsize(os.path.join(self.path, name))
            except OSError:
                pass
        return {"keys": keys, "bytes_on_disk": size}

    def close(self):
        self._env.close()
