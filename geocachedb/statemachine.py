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
"""

from geocachedb.raft.types import NORMAL
from geocachedb.wire import geocache_pb2 as pb


def encode_put(key, value, client_id=0, seq=0):
    cmd = pb.Command(client_id=client_id, seq=seq)
    cmd.put.key = key
    cmd.put.value = value
    return cmd.SerializeToString()


def encode_delete(key, client_id=0, seq=0):
    cmd = pb.Command(client_id=client_id, seq=seq)
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


class KVStateMachine:
    def __init__(self, storage):
        self.storage = storage

    @property
    def applied_index(self):
        return self.storage.applied_index()

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
        for entry in entries:
            result = None
            if entry.kind == NORMAL and entry.data:
                cmd = pb.Command.FromString(entry.data)
                op = cmd.WhichOneof("op")
                if op == "put":
                    final[cmd.put.key] = cmd.put.value
                    result = PutResult(entry.index)
                elif op == "delete":
                    key = cmd.delete.key
                    if key in final:
                        existed = final[key] is not None
                    else:
                        existed = self.storage.get(key) is not None
                    final[key] = None
                    result = DeleteResult(entry.index, existed)
            results.append(result)
        puts = [(k, v) for k, v in final.items() if v is not None]
        deletes = [k for k, v in final.items() if v is None]
        self.storage.apply_batch(puts, deletes, entries[-1].index)
        return results

    def get(self, key):
        return self.storage.get(key)

    def scan(self, start=b"", end=None, prefix=None, limit=None):
        return self.storage.scan(start, end, prefix, limit)
