"""The replicated key-value state machine: applies committed Raft entries to
an `IStorage`.

Sits at the end of the write path: the Raft host hands it every batch of
newly committed entries; it computes their results at once and (write-behind,
see `KVStateMachine`) writes the batches to storage with **one**
`apply_batch` that also records the index of the last entry.  Storage thus
never holds an entry twice: after a crash the entries past its applied index
(applied in memory only) are applied again from the Raft log, exactly once.
Entries are encoded `geocache.Command` messages; an entry with no data is a
new leader's empty entry and only advances the applied index.

Reads (`get`, `scan`) see memory first, then storage; whether they are
linearizable is decided before they get here (ReadIndex in the server).

Membership: a CONF entry carries the whole cluster configuration; applying
it stores those bytes under `CONF_KEY` (in the reserved key range, in the
same batch), so the configuration as of the applied index survives restarts
and travels inside snapshots.  The Raft host reads it back with
`configuration()`.  Snapshots: `snapshot_chunks` and `restore` are the
storage's snapshot out/in, plus rebuilding what is derived from storage.
"""

import threading

from zope.interface import implementer

from geocachedb import sessions
from geocachedb.interfaces import IStateMachine
from geocachedb.raft.types import CONF, NORMAL
from geocachedb.sessions import RESERVED_PREFIX, SessionTable
from geocachedb.storage.scan import prefix_end
from geocachedb.wire import geocache_pb2 as pb


def encode_put(key, value, client_id=0, seq=0, ack_floor=0):
    cmd = pb.Command(client_id=client_id, seq=seq, ack_floor=ack_floor)
    cmd.put.key = key
    cmd.put.value = value
    return cmd.SerializeToString()


def encode_delete(key, client_id=0, seq=0, ack_floor=0):
    cmd = pb.Command(client_id=client_id, seq=seq, ack_floor=ack_floor)
    cmd.delete.key = key
    return cmd.SerializeToString()


class PutResult:
    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def __repr__(self):
        return "PutResult(%d)" % self.index


class DeleteResult:
    __slots__ = ("index", "deleted")

    def __init__(self, index, deleted):
        self.index = index
        self.deleted = deleted

    def __repr__(self):
        return "DeleteResult(%d, %r)" % (self.index, self.deleted)


_RESERVED_END = prefix_end(RESERVED_PREFIX)

# The configuration as of the applied index: the data of the last CONF entry.
CONF_KEY = RESERVED_PREFIX + b"raft/conf"


@implementer(IStateMachine)
class KVStateMachine:
    """``write_behind=0``: every `apply` is one durable storage transaction.
    ``write_behind=N``: applied batches collect in memory (reads see them)
    and reach storage in one transaction once N keys are pending or when
    `flush` is called (the node flushes every second and before snapshots,
    scans and shutdown).  A write is acknowledged once its Raft entry is
    fsynced in the log, as in etcd; the storage is a cache of the log's
    prefix, so after a crash the entries past the storage's applied index
    are simply applied again.  `durable_index` tells the host how far the
    log may be compacted.

    ``background(work, done)``, when given and the storage allows it
    (``IStorage.concurrent_writes``): runs ``work()`` in another thread and
    then ``done()`` on this one.  `flush_in_background` then writes the
    pending batch there, so the caller's thread (the reactor) is not stopped
    for the storage commit: with random keys a 100 ms batch dirties most
    leaf pages, and committing it inline stopped the node for ~10 ms every
    100 ms — the largest part of its p99 latency.  While a batch is being
    written it stays readable here (``_flushing``); at most one is in flight."""

    def __init__(self, storage, write_behind=0, background=None):
        self.storage = storage
        self.sessions = SessionTable(storage)
        self.write_behind = write_behind
        self._background = background if getattr(storage, "concurrent_writes", False) else None
        self._pending = {}  # key -> value, or None for a delete
        self._pending_index = 0
        self._flushing = None  # the _Flush being written in the background
        self._dirty_sessions = set()  # client ids whose record is not in _pending
        index = storage.applied_index()
        # (the flush before the last, the last): LMDB without the meta-page
        # fsync may lose its last transaction to an OS crash.
        self._flushed = (index, index)

    def reload(self):
        """Rebuild derived state after the storage was replaced (snapshot)."""
        self._wait_for_background()
        self._pending = {}
        self._pending_index = 0
        self._dirty_sessions = set()
        index = self.storage.applied_index()
        # The transaction that loaded the snapshot is the storage's last one,
        # which an OS crash may still undo: it is durable after the next.
        self._flushed = (min(self._flushed[0], index), index)
        self.sessions = SessionTable(self.storage)

    @property
    def applied_index(self):
        if self._pending_index:
            return self._pending_index
        if self._flushing is not None:
            return self._flushing.index
        return self.storage.applied_index()

    @property
    def durable_index(self):
        """Every entry up to here is in storage and cannot be undone by a
        crash: the Raft log may drop it."""
        return self._flushed[0]

    def flush(self):
        """Write what is pending in one storage transaction, now (after the
        background batch in flight, if any)."""
        self._wait_for_background()
        if not self._pending_index:
            return
        job = self._take_pending()
        job.write(self.storage)
        self._flushed = (self._flushed[1], job.index)

    def flush_in_background(self):
        """Start writing what is pending in the background (see the class
        docs); without a background runner, the same as `flush`.  Does
        nothing while a batch is still being written: the next call takes
        everything pending by then."""
        if self._background is None:
            return self.flush()
        if self._flushing is not None or not self._pending_index:
            return
        job = self._flushing = self._take_pending()
        self._background(lambda: job.run(self.storage), lambda: self._finish(job))

    def _take_pending(self):
        if self._dirty_sessions:
            self._pending.update(self.sessions.writes(self._dirty_sessions))
            self._dirty_sessions = set()
        job = _Flush(self._pending, self._pending_index)
        self._pending = {}
        self._pending_index = 0
        return job

    def _wait_for_background(self):
        job = self._flushing
        if job is not None:
            job.finished.wait()
            self._finish(job)

    def _finish(self, job):
        """Back on the caller's thread once ``job`` is written (called by
        the runner, or earlier by a `flush` that waited for it)."""
        if self._flushing is not job:
            return  # a synchronous flush already finished it
        self._flushing = None
        if job.error is None:
            self._flushed = (self._flushed[1], job.index)
            return
        # Nothing of it reached storage (one transaction).  Put it back
        # under the newer writes and write it here, where a full LMDB map
        # can grow; a second failure is the storage's to report.
        for key, value in job.pending.items():
            self._pending.setdefault(key, value)
        self._pending_index = self._pending_index or job.index
        self.flush()

    def configuration(self):
        """The data of the last CONF entry applied (None if there was none)."""
        return self.get(CONF_KEY)

    def snapshot_chunks(self):
        """The state at the applied index, as `IStorage.snapshot_out` chunks."""
        self.flush()
        return self.storage.snapshot_out()

    def restore(self, chunks):
        """Replace the whole state with a snapshot (atomic; ValueError on a
        bad one, and the old state stays)."""
        self.flush()
        self.storage.snapshot_in(chunks)
        self.reload()

    def apply(self, entries):
        """Apply committed ``entries`` (in index order) in one storage
        transaction; return one result per entry (None for entries that are
        not client commands)."""
        if not entries:
            return []
        # Later operations on a key win; `apply_batch` applies puts before
        # deletes, so the final state of each key is computed here first.
        final = {}
        results = []
        append = results.append
        table = self.sessions
        # Sessions changed since the last flush: encoded once per flush,
        # not once per batch (`_take_pending`).
        dirty = self._dirty_sessions
        parse = pb.Command.FromString
        for entry in entries:
            kind = entry.kind
            if kind == NORMAL:
                data = entry.data
                if not data:  # a new leader's empty entry
                    append(None)
                    continue
                cmd = parse(data)
                index = entry.index
                op = cmd.WhichOneof("op")
                cid = cmd.client_id
                if cid:
                    seq = cmd.seq
                    seen = table.lookup(cid, seq)
                    if seen is not False:
                        append(_replayed(seen, op, index))
                        continue
                if op == "put":
                    put = cmd.put
                    final[put.key] = put.value
                    append(PutResult(index))
                    if cid:
                        table.record(cid, seq, cmd.ack_floor, (sessions.PUT, index, False), index, dirty)
                elif op == "delete":
                    key = cmd.delete.key
                    if key in final:
                        existed = final[key] is not None
                    else:
                        existed = self.get(key) is not None
                    final[key] = None
                    append(DeleteResult(index, existed))
                    if cid:
                        table.record(cid, seq, cmd.ack_floor, (sessions.DELETE, index, existed), index, dirty)
                else:
                    append(None)
            elif kind == CONF:
                final[CONF_KEY] = entry.data
                append(None)
            else:
                append(None)
        if dirty:
            evicted = []
            table.evict(dirty, evicted)
            for key in evicted:
                final[key] = None
        self._pending.update(final)
        self._pending_index = entries[-1].index
        if not self.write_behind:
            self.flush()
        elif len(self._pending) >= self.write_behind:
            # Bounded memory: at most one batch in flight and one of this size.
            if self._flushing is None:
                self.flush_in_background()
            elif len(self._pending) >= 2 * self.write_behind:
                self.flush()
        return results

    def get(self, key):
        pending = self._pending
        if key in pending:
            return pending[key]
        flushing = self._flushing
        if flushing is not None and key in flushing.pending:
            return flushing.pending[key]
        return self.storage.get(key)

    def scan(self, start=b"", end=None, prefix=None, limit=None):
        """A user scan: the reserved key range is never shown."""
        self.flush()  # simpler than merging the pending writes in order
        out = []
        cursor = start
        while True:
            want = None if limit is None else limit - len(out)
            if want == 0:
                return out
            pairs = self.storage.scan(cursor, end, prefix, want)
            out.extend(kv for kv in pairs if not kv[0].startswith(RESERVED_PREFIX))
            if want is None or len(pairs) < want:
                return out
            last = pairs[-1][0]
            cursor = _RESERVED_END if last.startswith(RESERVED_PREFIX) else last + b"\x00"


class _Flush:
    """One write-behind batch on its way to storage."""

    __slots__ = ("pending", "index", "error", "finished")

    def __init__(self, pending, index):
        self.pending = pending
        self.index = index
        self.error = None
        self.finished = threading.Event()

    def write(self, storage):
        # In key order: a B+tree writes neighbouring keys into the same
        # pages (LMDB's putmulti walks its cursor forward).
        pending = self.pending
        items = sorted(pending.items())
        if None in pending.values():
            deletes = [k for k, v in items if v is None]
            items = [kv for kv in items if kv[1] is not None]
        else:
            deletes = []
        storage.apply_batch(items, deletes, self.index)

    def run(self, storage):
        """The background thread's part: never raises (the error is kept
        for `KVStateMachine._finish`)."""
        try:
            self.write(storage)
        except Exception as e:
            self.error = e
        finally:
            self.finished.set()


def _replayed(stored, op, index):
    """The result a duplicate write gets: the original one when known."""
    if stored is None:  # below the floor: answered long ago
        return PutResult(index) if op == "put" else DeleteResult(index, False)
    kind, original_index, deleted = stored
    if kind == sessions.PUT:
        return PutResult(original_index)
    return DeleteResult(original_index, deleted)
