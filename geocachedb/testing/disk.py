"""A simulated disk for the Raft log: an in-memory `IRaftLog` that loses what
was not synced when its node crashes.

`SimDisk` is the platter: it holds the durable image of one node's log and
hard state and outlives the node's `Replica`.  `SimDisk.open()` returns a
`SimRaftLog`, the `IRaftLog` the Replica writes through.  Writes go to the
log's own (volatile) image at once and are queued; `sync()` replays the queue
onto the durable image — one fsync.  `SimDisk.crash()` throws the volatile
image away: what survives is the durable image plus, when the simulator asks
for a torn write, a prefix of the unsynced writes (a write-ahead log written
in order may have reached the platter partly before the power went).

Two hooks connect the disk to the rest of the simulator: ``before_sync``
lets the cluster crash the node in the middle of a batch (the hook raises
`SimulatedCrash` and the sync never happens), and ``observer`` lets the
invariant checker see every append (log matching, no truncation of
committed entries, a leader never rewrites its own log) and every reset
to a snapshot (which must not drop a committed entry either).
"""

from zope.interface import implementer

from geocachedb.interfaces import IRaftLog
from geocachedb.raft.types import HardState


class SimulatedCrash(BaseException):
    """Raised inside a node's I/O to crash it at that point.  The simulator
    catches it around every call into the node and tears the node down."""


def _copy_hard_state(hs):
    return HardState(hs.term, hs.vote, hs.commit)


class _Image:
    """A log and hard state: the durable one on the disk, or the volatile
    one a running node sees."""

    __slots__ = ("hard_state", "offset", "offset_term", "entries")

    def __init__(self):
        self.hard_state = HardState()
        self.offset = 0  # index of the entry before the first one held
        self.offset_term = 0
        self.entries = []

    def copy(self):
        new = _Image()
        new.hard_state = _copy_hard_state(self.hard_state)
        new.offset = self.offset
        new.offset_term = self.offset_term
        new.entries = list(self.entries)
        return new

    def last_index(self):
        return self.offset + len(self.entries)

    def apply(self, op):
        kind = op[0]
        if kind == "hs":
            self.hard_state = _copy_hard_state(op[1])
        elif kind == "append":
            entries = op[1]
            first = entries[0].index
            del self.entries[first - self.offset - 1 :]
            self.entries.extend(entries)
        elif kind == "compact":
            _, index, term = op
            del self.entries[: index - self.offset]
            self.offset = index
            self.offset_term = term
        elif kind == "reset":
            _, index, term = op
            self.entries = []
            self.offset = index
            self.offset_term = term
        else:  # pragma: no cover
            raise AssertionError(kind)


class SimDisk:
    def __init__(self, node_id, observer=None):
        self.node_id = node_id
        self.observer = observer
        self._durable = _Image()
        self.log = None
        self.fsyncs = 0
        self.crashes = 0
        self.torn_writes = 0
        self.lost_writes = 0
        self.compactions = 0
        self.resets = 0  # the log replaced by an installed snapshot

    def open(self, before_sync=None):
        """A fresh `SimRaftLog` over what is durable now (after a crash, or
        for a new node)."""
        if self.log is not None:
            self.log._dead = True
        self.log = SimRaftLog(self, self._durable.copy(), before_sync)
        return self.log

    def crash(self, rng, torn_probability=0.0):
        """Power failure: unsynced writes are lost, except (with
        ``torn_probability``) a random prefix of them that made it."""
        self.crashes += 1
        log = self.log
        if log is None:
            return
        pending = log._pending
        keep = 0
        partial = None
        if pending and torn_probability and rng.random() < torn_probability:
            keep = rng.randint(0, len(pending))
            if keep < len(pending) and pending[keep][0] == "append":
                entries = pending[keep][1]
                cut = rng.randint(0, len(entries))
                if cut:
                    partial = ("append", entries[:cut])
            self.torn_writes += 1
        for op in pending[:keep]:
            self._durable.apply(op)
        if partial is not None:
            self._durable.apply(partial)
        self.lost_writes += len(pending) - keep
        log._pending = []
        log._dead = True
        self.log = None

    def _sync(self, pending):
        for op in pending:
            self._durable.apply(op)
        self.fsyncs += 1

    # For the final checks: what survives a crash now.
    def durable_last_index(self):
        """The last index a crash now would leave in the log."""
        return self._durable.last_index()

    def durable_hard_state(self):
        return _copy_hard_state(self._durable.hard_state)


@implementer(IRaftLog)
class SimRaftLog:
    def __init__(self, disk, image, before_sync=None):
        self._disk = disk
        self._image = image
        self._pending = []
        self._before_sync = before_sync
        self._dead = False
        self.node_id = disk.node_id

    def _check(self):
        if self._dead:
            # The Replica that owned this log was dropped after a crash;
            # nothing it does may reach the disk any more.
            raise SimulatedCrash("write to the log of a crashed node")

    def hard_state(self):
        return _copy_hard_state(self._image.hard_state)

    def set_hard_state(self, hard_state):
        self._check()
        op = ("hs", _copy_hard_state(hard_state))
        self._image.apply(op)
        self._pending.append(op)

    def first_index(self):
        return self._image.offset + 1

    def last_index(self):
        return self._image.last_index()

    def term(self, index):
        image = self._image
        if index == image.offset:
            return image.offset_term
        if index < image.offset or index > image.last_index():
            raise IndexError(
                "index %d outside %d..%d" % (index, image.offset, image.last_index())
            )
        return image.entries[index - image.offset - 1].term

    def entry(self, index):
        """The entry at ``index`` or None (for the invariant checker)."""
        image = self._image
        if image.offset < index <= image.last_index():
            return image.entries[index - image.offset - 1]
        return None

    def entries(self, lo, hi, max_bytes=None):
        image = self._image
        if lo <= image.offset or hi > image.last_index() + 1:
            raise IndexError(
                "entries(%d, %d) outside %d..%d" % (lo, hi, image.offset + 1, image.last_index())
            )
        if hi <= lo:
            return []
        out = image.entries[lo - image.offset - 1 : hi - image.offset - 1]
        if max_bytes is not None and len(out) > 1:
            total = 0
            for n, entry in enumerate(out):
                total += len(entry.data)
                if n > 0 and total > max_bytes:
                    return out[:n]
        return out

    def append(self, entries):
        self._check()
        entries = list(entries)
        if not entries:
            return
        first = entries[0].index
        image = self._image
        if not (image.offset + 1 <= first <= image.last_index() + 1):
            raise ValueError(
                "append at %d outside %d..%d" % (first, image.offset + 1, image.last_index() + 1)
            )
        for a, b in zip(entries, entries[1:]):
            if b.index != a.index + 1:
                raise ValueError("entries not consecutive: %r, %r" % (a, b))
        observer = self._disk.observer
        if observer is not None:
            observer.before_append(self, entries)
        op = ("append", entries)
        image.apply(op)
        self._pending.append(op)
        if observer is not None:
            observer.after_append(self, entries)

    def sync(self):
        self._check()
        if self._before_sync is not None:
            self._before_sync()
        pending, self._pending = self._pending, []
        self._disk._sync(pending)

    def compact(self, index, term):
        self._check()
        image = self._image
        if index <= image.offset:
            return  # already compacted that far
        if index > image.last_index():
            raise ValueError("compact(%d) beyond last index %d" % (index, image.last_index()))
        op = ("compact", index, term)
        self._disk.compactions += 1
        image.apply(op)
        self._pending.append(op)

    def reset(self, index, term):
        self._check()
        observer = self._disk.observer
        if observer is not None:
            observer.before_reset(self, index, term)
        op = ("reset", index, term)
        self._disk.resets += 1
        self._image.apply(op)
        self._pending.append(op)

    def stats(self):
        image = self._image
        return {
            "entries": len(image.entries),
            "bytes_on_disk": sum(len(e.data) for e in self._disk._durable.entries),
        }

    def close(self):
        self._dead = True
