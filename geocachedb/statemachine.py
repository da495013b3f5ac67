"""The replicated key-value state machine: applies committed Raft entries to
an `IStorage`.

Sits at the end of the write path: the Raft host hands it every batch of
newly committed entries and it writes them with **one** `apply_batch` (one
transaction, one fsync) that also records the index of the last entry, so a
restart neither loses nor re-applies an entry.  Entries are encoded
`geocache.Command` messages; an entry with no data is a new leader's empty
entry and only advances the applied index.

Reads (`get`, `scan`) go straight to storage; whether they are linearizable
is decided before they get here (ReadIndex in the Raft host).

Membership: a CONF entry carries the whole cluster configuration; applying
it stores those bytes under `CONF_KEY` (in the reserved key range, in the
same batch), so the configuration as of the applied index survives restarts
and travels inside snapshots.  The Raft host reads it back with
`configuration()`.  Snapshots: `snapshot_chunks` and `restore` are the
storage's snapshot out/in, plus rebuilding what is derived from storage.
"""

from geocachedb import sessions
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


class KVStateMachine:
    def __init__(self, storage):
        self.storage = storage
        self.sessions = SessionTable(storage)

    def reload(self):
        """Rebuild derived state after the storage was replaced (snapshot)."""
        self.sessions = SessionTable(self.storage)

    @property
    def applied_index(self):
        return self.storage.applied_index()

    def configuration(self):
        """The data of the last CONF entry applied (None if there was none)."""
        return self.storage.get(CONF_KEY)

    def snapshot_chunks(self):
        """The state at the applied index, as `IStorage.snapshot_out` chunks."""
        return self.storage.snapshot_out()

    def restore(self, chunks):
        """Replace the whole state with a snapshot (atomic; ValueError on a
        bad one, and the old state stays)."""
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
        table = self.sessions
        dirty = set()
        for entry in entries:
            result = None
            if entry.kind == CONF:
                final[CONF_KEY] = entry.data
            elif entry.kind == NORMAL and entry.data:
                cmd = pb.Command.FromString(entry.data)
                op = cmd.WhichOneof("op")
                cid = cmd.client_id
                if cid:
                    seen = table.lookup(cid, cmd.seq)
                    if seen is not False:
                        results.append(_replayed(seen, op, entry.index))
                        continue
                if op == "put":
                    final[cmd.put.key] = cmd.put.value
                    result = PutResult(entry.index)
                    if cid:
                        table.record(cid, cmd.seq, cmd.ack_floor, (sessions.PUT, entry.index, False), entry.index, dirty)
                elif op == "delete":
                    key = cmd.delete.key
                    if key in final:
                        existed = final[key] is not None
                    else:
                        existed = self.storage.get(key) is not None
                    final[key] = None
                    result = DeleteResult(entry.index, existed)
                    if cid:
                        table.record(cid, cmd.seq, cmd.ack_floor, (sessions.DELETE, entry.index, existed), entry.index, dirty)
            results.append(result)
        puts = [(k, v) for k, v in final.items() if v is not None]
        deletes = [k for k, v in final.items() if v is None]
        if dirty:
            table.evict(dirty, deletes)
            puts.extend(table.writes(dirty))
        self.storage.apply_batch(puts, deletes, entries[-1].index)
        return results

    def get(self, key):
        return self.storage.get(key)

    def scan(self, start=b"", end=None, prefix=None, limit=None):
        """A user scan: the reserved key range is never shown."""
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


def _replayed(stored, op, index):
    """The result a duplicate write gets: the original one when known."""
    if stored is None:  # below the floor: answered long ago
        return PutResult(index) if op == "put" else DeleteResult(index, False)
    kind, original_index, deleted = stored
    if kind == sessions.PUT:
        return PutResult(original_index)
    return DeleteResult(original_index, deleted)
