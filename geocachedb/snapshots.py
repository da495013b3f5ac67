"""InstallSnapshot on the host side: streaming a state-machine snapshot to a
follower in bounded chunks, and spooling the chunks a follower receives
until the snapshot is complete and can be installed at once.

Where it sits: the Raft core decides *that* a follower needs a snapshot
(its entries are compacted away) and *whether* a received one replaces the
log; `geocachedb.server.replica.Replica` does the I/O with the pieces here:

* `OutgoingSnapshot` (leader) cuts ``IStorage.snapshot_out()`` — a lazy
  iterator, consistent as of the moment it was opened — into chunks of at
  most ``chunk_bytes``; one chunk per follower is in flight, and it is
  resent until acknowledged.  Memory per transfer: one chunk plus one
  storage chunk of look-ahead.
* A snapshot store (follower) spools the incoming chunks.  Only when the
  last chunk has arrived is the snapshot `finish`-ed: made durable and
  marked complete in one atomic step.  The host then loads it into storage
  (`snapshot_in`, atomic), resets the Raft log, and `release`-s it once the
  storage's copy is known durable.  A crash at any point leaves either the
  old state (a partial spool is simply dropped) or a complete snapshot that
  `Replica` installs again on restart (`completed()`).

The metadata of the snapshot being received (``incoming()``) also survives
a crash, though its partial data does not: a node that joined with nothing
votes as if it held the leader's log up to there (see `RaftCore.is_blank`).

Two stores share one interface (``begin(meta)``, ``write(data)``,
``finish()``, ``abort()``, ``incoming()``, ``completed()``, ``chunks()``,
``release()``):
`MemorySnapshotStore` for tests and the simulator, `FileSnapshotStore`
under a node's data directory.

`restore_as_new_cluster` turns a backup into the first member of a new
cluster.
"""

import json
import os
import zlib

from zope.interface import implementer

from geocachedb.interfaces import ISnapshotStore

from geocachedb.raft import confchange
from geocachedb.raft.types import HardState, SnapshotMeta

READ_CHUNK = 256 * 1024


# ------------------------------------------------------------ metadata --


def encode_meta(meta, **extra):
    doc = {"index": meta.index, "term": meta.term,
           "config": confchange.encode(meta.config).decode()}
    doc.update(extra)
    return json.dumps(doc, sort_keys=True).encode()


def decode_meta(data):
    """(SnapshotMeta, the whole document); ValueError when malformed."""
    try:
        doc = json.loads(data.decode("utf-8"))
        meta = SnapshotMeta(int(doc["index"]), int(doc["term"]),
                            confchange.decode(doc["config"].encode()))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise ValueError("bad snapshot metadata") from None
    return meta, doc


# ------------------------------------------------------------ the leader --


class OutgoingSnapshot:
    """One snapshot being streamed to one follower: the current chunk,
    its offset, and when it was last sent (in host ticks)."""

    def __init__(self, peer, term, meta, chunks, chunk_bytes, now):
        self.peer = peer
        self.term = term
        self.meta = meta
        self._source = iter(chunks)
        self._chunk_bytes = chunk_bytes
        self._buf = bytearray()
        self._eof = False
        self.offset = 0
        self.data = b""
        self.last = False
        self.sent_at = now
        self.progress_at = now
        self.resends = 0
        self._cut()

    def _cut(self):
        """Take the next chunk from the source, looking one storage chunk
        ahead so that the last chunk is known to be last."""
        size = self._chunk_bytes
        buf = self._buf
        while not self._eof and len(buf) <= size:
            try:
                buf += next(self._source)
            except StopIteration:
                self._eof = True
        self.data = bytes(buf[:size])
        del buf[:size]
        self.last = self._eof and not buf

    def acked(self, received, now):
        """The follower has ``received`` bytes.  Returns True when a new
        chunk is ready to send."""
        end = self.offset + len(self.data)
        if self.last or received != end:
            return False  # a duplicate or stale acknowledgement
        self.offset = end
        self._cut()
        self.progress_at = now
        self.resends = 0
        return True

    def close(self):
        """Release the storage's snapshot (e.g. an LMDB read transaction)."""
        close = getattr(self._source, "close", None)
        if close is not None:
            close()
        self._buf = bytearray()

    def __repr__(self):
        return "OutgoingSnapshot(to=%s, %r, offset=%d%s)" % (
            self.peer, self.meta, self.offset, ", last" if self.last else "")


def rechunk(chunks, size):
    """The bytes of ``chunks`` again, in chunks of ``size`` (the last may be
    shorter)."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


# ----------------------------------------------------------- the stores --


@implementer(ISnapshotStore)
class MemorySnapshotStore:
    """An in-memory snapshot store.  It stands for a disk in the simulator:
    keep one per node across crashes and call `crash()`, which loses the
    partial spool (a process's buffers) but keeps a finished snapshot."""

    def __init__(self):
        self._incoming = None  # (meta, [chunks])
        self._incoming_meta = None  # survives crash()
        self._completed = None  # (meta, [chunks])
        self.finished = 0
        self.released = 0

    def begin(self, meta):
        self._incoming = (meta, [])
        self._incoming_meta = meta

    def write(self, data):
        if self._incoming is None:
            raise ValueError("write() without begin()")
        self._incoming[1].append(bytes(data))

    def finish(self):
        if self._incoming is None:
            raise ValueError("finish() without begin()")
        self._completed = self._incoming
        self._incoming = None
        self._incoming_meta = None
        self.finished += 1

    def abort(self):
        self._incoming = None
        self._incoming_meta = None

    def incoming(self):
        return self._incoming_meta

    def completed(self):
        return self._completed[0] if self._completed is not None else None

    def chunks(self):
        if self._completed is None:
            raise ValueError("no completed snapshot")
        return tuple(self._completed[1])

    def release(self):
        if self._completed is not None:
            self.released += 1
        self._completed = None

    def crash(self):
        self._incoming = None

    def spooled_bytes(self):
        return sum(len(c) for c in self._incoming[1]) if self._incoming else 0


class _FileChunks:
    """Re-iterable chunks of a file (each iteration reopens it)."""

    def __init__(self, path, size):
        self.path = path
        self.size = size

    def __iter__(self):
        with open(self.path, "rb") as f:
            while True:
                data = f.read(READ_CHUNK)
                if not data:
                    return
                yield data


@implementer(ISnapshotStore)
class FileSnapshotStore:
    """A snapshot store in a directory (a node's ``<data>/snapshots``).

    Files: ``incoming.part`` is the spool being written; a finished spool is
    renamed to ``snapshot-<index>-<term>.data`` and then named by
    ``snapshot.meta`` (JSON: index, term, configuration, file name, size,
    CRC-32), which is written to a temporary file and renamed into place:
    the rename is the atomic moment a snapshot becomes complete.  Every step
    is fsynced (file, then directory).  Nothing else counts: a data file no
    meta names, or a stray temporary file, is garbage and is removed.
    """

    META = "snapshot.meta"
    PART = "incoming.part"
    PART_META = "incoming.meta"

    def __init__(self, directory, fsync=True):
        self.directory = directory
        self._fsync = fsync
        os.makedirs(directory, exist_ok=True)
        self._file = None
        self._meta = None
        self._size = 0
        self._crc = 0
        self._collect_garbage()

    # -- helpers

    def _path(self, name):
        return os.path.join(self.directory, name)

    def _sync_dir(self):
        if not self._fsync:
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_meta(self):
        try:
            with open(self._path(self.META), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None, None
        meta, doc = decode_meta(raw)
        return meta, doc

    def _collect_garbage(self):
        try:
            _, doc = self._read_meta()
        except ValueError:
            # A torn meta file cannot happen (written aside, then renamed);
            # an unreadable one names nothing we can trust.
            os.unlink(self._path(self.META))
            doc = None
        keep = {doc["file"]} if doc else set()
        for name in os.listdir(self.directory):
            if name in (self.META, self.PART_META) or name in keep:
                continue
            if name.endswith((".data", ".part", ".tmp")):
                os.unlink(self._path(name))

    # -- incoming

    def _write_aside(self, name, data):
        """Write ``name`` atomically: a temporary file, fsync, rename."""
        tmp = self._path(name + ".tmp")
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            if self._fsync:
                os.fsync(out.fileno())
        os.replace(tmp, self._path(name))
        self._sync_dir()

    def begin(self, meta):
        self.abort()
        self._meta = meta
        self._write_aside(self.PART_META, encode_meta(meta))
        self._file = open(self._path(self.PART), "wb")
        self._size = 0
        self._crc = 0

    def write(self, data):
        if self._file is None:
            raise ValueError("write() without begin()")
        self._file.write(data)
        self._size += len(data)
        self._crc = zlib.crc32(data, self._crc)

    def finish(self):
        if self._file is None:
            raise ValueError("finish() without begin()")
        f, self._file = self._file, None
        f.flush()
        if self._fsync:
            os.fsync(f.fileno())
        f.close()
        meta = self._meta
        name = "snapshot-%d-%d.data" % (meta.index, meta.term)
        os.replace(self._path(self.PART), self._path(name))
        self._sync_dir()
        self._write_aside(self.META, encode_meta(meta, file=name, size=self._size,
                                                 crc32=self._crc))
        self._unlink(self.PART_META)
        self._collect_garbage()  # the older completed snapshot, if any

    def _unlink(self, name):
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass

    def abort(self):
        if self._file is not None:
            self._file.close()
            self._file = None
        self._unlink(self.PART)
        self._unlink(self.PART_META)

    def incoming(self):
        try:
            with open(self._path(self.PART_META), "rb") as f:
                return decode_meta(f.read())[0]
        except FileNotFoundError:
            return None
        except ValueError:
            return None

    # -- completed

    def completed(self):
        meta, doc = self._read_meta()
        if meta is None:
            return None
        try:
            size = os.path.getsize(self._path(doc["file"]))
        except OSError:
            return None
        if size != doc.get("size"):
            return None
        return meta

    def chunks(self):
        meta, doc = self._read_meta()
        if meta is None:
            raise ValueError("no completed snapshot")
        return _FileChunks(self._path(doc["file"]), doc["size"])

    def release(self):
        try:
            os.unlink(self._path(self.META))
        except FileNotFoundError:
            return
        self._sync_dir()
        self._collect_garbage()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


# -------------------------------------------------------------- restore --


def restore_as_new_cluster(state_machine, raft_log, node_id, chunks, address=None):
    """Start a new one-voter cluster from a backup: load ``chunks`` (an
    `IStorage.snapshot_out` stream) into the state machine, make
    ``node_id`` the only voter, and start the Raft log right after the
    snapshot's index.  ``raft_log`` must be empty (a new data directory);
    the other members then join through membership changes.  ``address``
    is recorded as where ``node_id`` listens.  Raises
    ValueError on a corrupt backup (nothing is changed then)."""
    if raft_log.last_index() != 0 or raft_log.hard_state().term != 0:
        raise ValueError("restore needs an empty Raft log (a new data directory)")
    state_machine.restore(chunks)
    index = state_machine.applied_index
    addresses = {node_id: address} if address else None
    config = confchange.encode(confchange.ClusterConfig([node_id], addresses=addresses))
    from geocachedb.statemachine import CONF_KEY

    # The backup's configuration names the old cluster; this one starts
    # with one voter.  Written with the applied index, as a CONF entry is.
    state_machine.storage.apply_batch([(CONF_KEY, config)], [], index)
    state_machine.reload()
    # Term 1 for the snapshot's entry: the new cluster's first election
    # (term 2) is then newer than anything in its log.
    raft_log.reset(index, 1 if index else 0)
    raft_log.set_hard_state(HardState(1 if index else 0, None, index))
    raft_log.sync()
    return index
