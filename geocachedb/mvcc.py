"""The multi-version key space: every change has a revision, every version
is kept until compaction, and reads can be made at any retained revision.

Sits inside `geocachedb.statemachine.KVStateMachine`, which calls it while
applying committed entries and while serving reads.  It is etcd's mvcc
design (`server/storage/mvcc`) in our storage:

* **Storage holds history only.**  Each version of a key is one *event*
  (`geocachedb.history_format`): a put (key, value, create revision, mod
  revision, version, lease) or a tombstone, keyed by revision.
  Revision-ordered keys make compaction and (later) watch
  catch-up a forward scan, and every key stays far below LMDB's 511 bytes
  whatever the user key.  The current revision and the compaction point
  live under `META_KEY`.  All of it goes through the state machine's
  pending writes, so it reaches storage in the same `apply_batch` as the
  applied index.
* **The key index is in memory** (etcd's keyIndex): user key -> its
  retained versions, ``(revision, sub, kind, create_revision, version)``,
  in a `SortedDict` so ranges walk keys in order.  It is rebuilt from the
  history at start and after a snapshot install.

The revision moves only for changes: a put, a delete that deleted
something, a txn whose branch wrote.  So it is not the Raft index.
"""

import bisect
import struct

from sortedcontainers import SortedDict

from geocachedb import errors
from geocachedb.history_format import (
    DELETE, HISTORY_PREFIX, PUT, decode_event, encode_event, history_key, parse_history_key,
)
from geocachedb.limits import RESERVED_PREFIX

__all__ = ["KV", "Change", "KeySpace", "META_KEY", "PUT", "DELETE", "HISTORY_PREFIX",
           "history_key", "encode_event"]

META_KEY = RESERVED_PREFIX + b"mvcc"

_META = struct.Struct(">QQQ")  # revision, compact scheduled, compact finished
_MAX_SUB = 0xFFFFFFFF

# An index entry: (revision, sub, kind, create_revision, version).
REV, SUB, KIND, CREATE, VERSION = range(5)


class KV:
    """One version of a key, as a read returns it."""

    __slots__ = ("key", "value", "create_revision", "mod_revision", "version", "lease")

    def __init__(self, key, value, create_revision, mod_revision, version, lease=0):
        self.key = key
        self.value = value
        self.create_revision = create_revision
        self.mod_revision = mod_revision
        self.version = version
        self.lease = lease

    def to_pb(self, kv, keys_only=False):
        kv.key = self.key
        if not keys_only:
            kv.value = self.value
        kv.create_revision = self.create_revision
        kv.mod_revision = self.mod_revision
        kv.version = self.version
        kv.lease = self.lease
        return kv

    def __eq__(self, other):
        return isinstance(other, KV) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self):
        return "KV(%r, %r, create=%d, mod=%d, version=%d)" % (
            self.key, self.value, self.create_revision, self.mod_revision, self.version)


class Change:
    """The writes of one command, staged until it has fully succeeded (a
    txn whose third op fails leaves nothing behind).  Reads through the
    key space with a change see its writes."""

    __slots__ = ("revision", "sub", "writes", "entries")

    def __init__(self, revision):
        self.revision = revision  # the revision this change would make
        self.sub = 0
        self.writes = {}  # storage key -> bytes
        self.entries = {}  # user key -> its new index entry (one per key)


class KeySpace:
    """``read(storage_key)`` gives the bytes stored (pending writes
    included), or None."""

    def __init__(self, read):
        self._read = read
        self.index = SortedDict()
        self.revision = 0
        self.compact_revision = 0

    # -------------------------------------------------------------- state ---

    def load(self, storage):
        """Rebuild the index and counters from ``storage`` (at start, and
        after a snapshot replaced it)."""
        index = self.index = SortedDict()
        meta = storage.get(META_KEY)
        self.revision, scheduled, finished = _META.unpack(meta) if meta else (0, 0, 0)
        self.compact_revision = finished
        for hkey, data in storage.scan(prefix=HISTORY_PREFIX):
            revision, sub = parse_history_key(hkey)
            kind, key, create, _, version, _, _ = decode_event(data)
            entries = index.get(key)
            if entries is None:
                entries = index[key] = []
            entries.append((revision, sub, kind, create, version))
        if scheduled != finished:
            # Compaction is applied in one batch with its record, so this
            # is a store written by something else: finish it now.
            writes = {}
            self.compact(scheduled, writes)
            for key, value in writes.items():
                if value is None:
                    storage.delete(key)
                else:
                    storage.put(key, value)

    @staticmethod
    def encode_meta(revision, compact_revision):
        # Scheduled and finished compaction are recorded apart (etcd #17780);
        # ours is applied in the same batch as its record, so they agree.
        return _META.pack(revision, compact_revision, compact_revision)

    def check_revision(self, revision):
        """Raise unless a read at ``revision`` (0: now) can be served."""
        if revision:
            if revision < self.compact_revision:
                raise errors.Compacted(
                    "revision %d has been compacted; the compact revision is %d"
                    % (revision, self.compact_revision), compact_revision=self.compact_revision)
            if revision > self.revision:
                raise errors.FutureRevision(
                    "revision %d is in the future; the current revision is %d"
                    % (revision, self.revision), current_revision=self.revision)

    # -------------------------------------------------------------- reads ---

    def entry_at(self, key, revision=0, change=None):
        """The index entry of ``key``'s version as of ``revision`` (0: the
        latest, including ``change``), or None."""
        if change is not None and not revision:
            entry = change.entries.get(key)
            if entry is not None:
                return entry
        entries = self.index.get(key)
        if not entries:
            return None
        if not revision or revision >= entries[-1][REV]:
            return entries[-1]
        i = bisect.bisect_right(entries, (revision, _MAX_SUB, 9))
        return entries[i - 1] if i else None

    def kv(self, key, entry, change=None):
        """The KV of a put entry."""
        hkey = history_key(entry[REV], entry[SUB])
        data = None
        if change is not None:
            data = change.writes.get(hkey)
        if data is None:
            data = self._read(hkey)
        _, _, create, mod, version, lease, value = decode_event(data)
        return KV(key, value, create, mod, version, lease)

    def get(self, key, revision=0, change=None):
        """The KV of ``key`` as of ``revision`` (0: now), or None."""
        entry = self.entry_at(key, revision, change)
        if entry is None or entry[KIND] != PUT:
            return None
        return self.kv(key, entry, change)

    def keys(self, start, end, descending=False, change=None):
        """User keys with versions in ``[start, end)`` (``end`` None: to
        the end), in key order."""
        keys = self.index.irange(start, end, inclusive=(True, False), reverse=descending) \
            if end is None or start < end else iter(())
        if change is None or not change.entries:
            return keys
        extra = [k for k in change.entries if k >= start and (end is None or k < end)
                 and k not in self.index]
        if not extra:
            return keys
        return iter(sorted(set(keys) | set(extra), reverse=descending))

    def range(self, start, end, revision=0, limit=0, keys_only=False, count_only=False,
              min_mod=0, max_mod=0, min_create=0, max_create=0, descending=False,
              change=None, max_bytes=None):
        """Keys in ``[start, end)`` as of ``revision``: (kvs, more, count).
        ``count`` is every key that matched whatever ``limit``; ``more``
        says some matched beyond what was returned (``limit``, or
        ``max_bytes`` of keys and values)."""
        self.check_revision(revision)
        kvs = []
        count = 0
        size = 0
        full = count_only
        for key in self.keys(start, end, descending, change):
            entry = self.entry_at(key, revision, change)
            if entry is None or entry[KIND] != PUT:
                continue
            mod = entry[REV]
            if (min_mod and mod < min_mod) or (max_mod and mod > max_mod):
                continue
            create = entry[CREATE]
            if (min_create and create < min_create) or (max_create and create > max_create):
                continue
            count += 1
            if full:
                continue
            kv = self.kv(key, entry, change)
            if max_bytes is not None:
                size += len(key) + (0 if keys_only else len(kv.value)) + 32
                if size > max_bytes and kvs:
                    full = True
                    continue
            if keys_only:
                kv.value = b""
            kvs.append(kv)
            if limit and len(kvs) >= limit:
                full = True
        return kvs, count > len(kvs) and not count_only, count

    # ------------------------------------------------------------- writes ---

    def put_now(self, key, value, writes):
        """A lone put (the common command): no staging, its own revision.
        Returns the previous index entry (None if new)."""
        index = self.index
        entries = index.get(key)
        revision = self.revision + 1
        prev = entries[-1] if entries else None
        if prev is not None and prev[KIND] == PUT:
            create, version = prev[CREATE], prev[VERSION] + 1
        else:
            create, version = revision, 1
        writes[history_key(revision, 0)] = encode_event(PUT, key, create, revision, version, 0, value)
        entry = (revision, 0, PUT, create, version)
        if entries is None:
            index[key] = [entry]
        else:
            entries.append(entry)
        self.revision = revision
        return prev

    def put(self, key, value, change, lease=0):
        """Stage a put of ``key``; return the previous KV (None if new)."""
        prev_entry = self.entry_at(key, 0, change)
        revision = change.revision
        sub = change.sub
        change.sub = sub + 1
        if prev_entry is not None and prev_entry[KIND] == PUT:
            create, version = prev_entry[CREATE], prev_entry[VERSION] + 1
        else:
            create, version = revision, 1
        change.writes[history_key(revision, sub)] = encode_event(
            PUT, key, create, revision, version, lease, value)
        change.entries[key] = (revision, sub, PUT, create, version)
        return prev_entry

    def delete(self, key, change):
        """Stage a delete of ``key`` if it exists; return its entry (None
        when there was nothing to delete)."""
        prev_entry = self.entry_at(key, 0, change)
        if prev_entry is None or prev_entry[KIND] != PUT:
            return None
        revision = change.revision
        sub = change.sub
        change.sub = sub + 1
        change.writes[history_key(revision, sub)] = encode_event(DELETE, key, 0, revision, 0, 0)
        change.entries[key] = (revision, sub, DELETE, 0, 0)
        return prev_entry

    def commit(self, change, writes):
        """Make ``change`` part of the state: its events into ``writes``
        (the pending storage writes) and the index; the revision moves
        when it wrote anything.  Returns the revision now current.  (The
        caller records the new revision under META_KEY once per batch:
        `record_meta`.)"""
        if not change.entries:
            return self.revision
        writes.update(change.writes)
        index = self.index
        for key, entry in change.entries.items():
            entries = index.get(key)
            if entries is None:
                index[key] = [entry]
            else:
                entries.append(entry)
        self.revision = change.revision
        return self.revision

    def record_meta(self, writes):
        writes[META_KEY] = self.encode_meta(self.revision, self.compact_revision)

    def compact(self, revision, writes):
        """Drop every version that no read at ``revision`` or later can
        see: each key keeps its latest version <= ``revision`` (a tombstone
        only when it is exactly at ``revision``, so a watcher starting
        there still gets the delete) and everything after it."""
        index = self.index
        dead = []
        for key, entries in index.items():
            if entries[0][REV] >= revision:
                continue
            i = bisect.bisect_right(entries, (revision, _MAX_SUB, 9)) - 1
            keep_from = i
            if entries[i][KIND] != PUT and entries[i][REV] < revision:
                keep_from = i + 1
            for entry in entries[:keep_from]:
                writes[history_key(entry[REV], entry[SUB])] = None
            if keep_from:
                del entries[:keep_from]
                if not entries:
                    dead.append(key)
        for key in dead:
            del index[key]
        self.compact_revision = max(self.compact_revision, revision)
        self.record_meta(writes)
