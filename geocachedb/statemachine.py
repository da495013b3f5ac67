"""The replicated key-value state machine: applies committed Raft entries to
an `IStorage`.

Sits at the end of the write path: the Raft host hands it every batch of
newly committed entries; it computes their results at once and (write-behind,
see `KVStateMachine`) writes the batches to storage with **one**
`apply_batch` that also records the index of the last entry.  Storage thus
never holds an entry twice: after a crash the entries past its applied index
(applied in memory only) are applied again from the Raft log, exactly once.
Entries are encoded `geocache.Command` messages, executed by
`geocachedb.commands` against the multi-version key space
(`geocachedb.mvcc`: revisions, history, compaction); an entry with no data
is a new leader's empty entry and only advances the applied index.

Reads (`get_kv`, `range`) go through the key space, which reads memory
first, then storage; whether they are linearizable is decided before they
get here (ReadIndex in the server).

Membership: a CONF entry carries the whole cluster configuration; applying
it stores those bytes under `CONF_KEY` (in the reserved key range, in the
same batch), so the configuration as of the applied index survives restarts
and travels inside snapshots.  The Raft host reads it back with
`configuration()`.  Snapshots: `snapshot_chunks` and `restore` are the
storage's snapshot out/in, plus rebuilding what is derived from storage.
"""

import threading

from zope.interface import implementer

from geocachedb import commands, errors
from geocachedb.interfaces import IStateMachine
from geocachedb.mvcc import META_KEY, PUT, KeySpace, encode_event, history_key
from geocachedb.raft.types import CONF, NORMAL
from geocachedb.sessions import RESERVED_PREFIX, SessionTable
from geocachedb.storage.scan import prefix_end
from geocachedb.wire import geocache_pb2 as pb

# Kept here for the callers that encode single writes.
encode_put = commands.encode_put
encode_delete = commands.encode_delete

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
        self.space = KeySpace(self.stored)
        _upgrade(storage)
        self.space.load(storage)
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
        _upgrade(self.storage)
        self.space.load(self.storage)

    @property
    def revision(self):
        """The revision of the last change applied (memory included)."""
        return self.space.revision

    @property
    def compact_revision(self):
        return self.space.compact_revision

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
        return self.stored(CONF_KEY)

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
        """Apply committed ``entries`` (in index order); return one result
        per entry: the Response of a client command (`commands.execute`),
        None for the others."""
        if not entries:
            return []
        results = []
        append = results.append
        table = self.sessions
        # Sessions changed since the last flush: encoded once per flush,
        # not once per batch (`_take_pending`).
        dirty = self._dirty_sessions
        pending = self._pending
        space = self.space
        execute = commands.execute
        parse = pb.Command.FromString
        revision_before = space.revision
        for entry in entries:
            kind = entry.kind
            if kind == NORMAL:
                data = entry.data
                if not data:  # a new leader's empty entry
                    append(None)
                    continue
                cmd = parse(data)
                op = cmd.WhichOneof("op")
                if op is None:
                    append(None)
                    continue
                cid = cmd.client_id
                if cid:
                    seq = cmd.seq
                    seen = table.lookup(cid, seq, cmd.ack_floor)
                    if seen is not False:
                        append(seen if seen is not None else _expired(space.revision))
                        continue
                result = execute(space, cmd, op, entry.index, pending)
                append(result)
                if cid:
                    table.record(cid, seq, cmd.ack_floor, result, entry.index, dirty)
            elif kind == CONF:
                pending[CONF_KEY] = entry.data
                append(None)
            else:
                append(None)
        if space.revision != revision_before:
            space.record_meta(pending)  # once per batch, not per write
        if dirty:
            evicted = []
            table.evict(dirty, evicted)
            for key in evicted:
                pending[key] = None
        self._pending_index = entries[-1].index
        if not self.write_behind:
            self.flush()
        elif len(pending) >= self.write_behind:
            # Bounded memory: at most one batch in flight and one of this size.
            if self._flushing is None:
                self.flush_in_background()
            elif len(pending) >= 2 * self.write_behind:
                self.flush()
        return results

    def get(self, key):
        """The current value of user key ``key``, or None."""
        kv = self.space.get(key)
        return None if kv is None else kv.value

    def stored(self, key):
        """The bytes under storage key ``key``, pending writes included
        (the reserved keys: history, sessions, the configuration)."""
        pending = self._pending
        if key in pending:
            return pending[key]
        flushing = self._flushing
        if flushing is not None and key in flushing.pending:
            return flushing.pending[key]
        return self.storage.get(key)

    def get_kv(self, key, revision=0):
        """``key``'s KV as of ``revision`` (0: now), or None; Compacted /
        FutureRevision when that revision cannot be read."""
        self.space.check_revision(revision)
        return self.space.get(key, revision)

    def range(self, request, out):
        """Serve a RangeRequest into RangeResponse ``out``."""
        commands.read_range(self.space, request, out)

    def scan(self, start=b"", end=None, prefix=None, limit=None):
        """The current ``(key, value)`` pairs in ``[start, end)`` or under
        ``prefix``, in key order (tools and tests)."""
        if prefix is not None:
            start = max(start, prefix)
            bound = prefix_end(prefix)
            end = bound if end is None or bound is None else min(end, bound)
        kvs, _, _ = self.space.range(start, end, limit=limit or 0)
        return [(kv.key, kv.value) for kv in kvs]


def _expired(revision):
    response = pb.Response()
    errors.SessionExpired(
        "session expired: this client's session is no longer in the deduplication table, "
        "so the outcome of this write is unknown; it was not applied now").to_pb(response.error)
    response.header.revision = revision
    return response


def _upgrade(storage):
    """A store written before revisions held user keys with bare values:
    turn them into history at revision 1 (one transaction), so nothing
    written before the upgrade is lost."""
    if storage.get(META_KEY) is not None:
        return
    puts = []
    deletes = []
    for key, value in storage.scan():
        if key.startswith(RESERVED_PREFIX):
            continue
        puts.append((history_key(1, len(puts)), encode_event(PUT, key, 1, 1, 1, 0, value)))
        deletes.append(key)
    if not puts:
        return
    puts.append((META_KEY, KeySpace.encode_meta(1, 0)))
    storage.apply_batch(puts, deletes, storage.applied_index())


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
