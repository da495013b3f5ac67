"""An in-memory `IRaftLog`: the persisted log for unit tests and the
simulator.

It follows the IRaftLog contract to the letter (index arithmetic, truncation
on append, compaction), and it also models durability: every write lands in
the "volatile" state at once, `sync` makes the volatile state durable, and
`lose_unsynced` (a simulated crash) throws away every write since the last
`sync`.  The simulator keeps one instance per node across a crash, calls
`lose_unsynced()` and builds a new `Replica` on it.

`sync` is O(writes since the last sync), not O(log): the writes are journaled
and replayed onto the durable copy.
"""

from zope.interface import implementer

from geocachedb.interfaces import IRaftLog
from geocachedb.raft.types import HardState


class _LogState:
    """Entries ``offset+1 ..`` in a list, the term of ``offset`` (the
    snapshot/compaction point), and a hard state."""

    __slots__ = ("entries", "offset", "offset_term", "hard_state")

    def __init__(self):
        self.entries = []
        self.offset = 0
        self.offset_term = 0
        self.hard_state = HardState()

    def copy(self):
        other = _LogState()
        other.entries = list(self.entries)
        other.offset = self.offset
        other.offset_term = self.offset_term
        other.hard_state = self.hard_state
        return other

    def append(self, entries):
        if not entries:
            return
        first = entries[0].index
        last = self.offset + len(self.entries)
        if first < self.offset + 1 or first > last + 1:
            raise ValueError("append at %d outside %d..%d" % (first, self.offset + 1, last + 1))
        del self.entries[first - self.offset - 1:]
        self.entries.extend(entries)

    def compact(self, index, term):
        if index <= self.offset:
            return
        last = self.offset + len(self.entries)
        if index > last:
            raise ValueError("compact(%d) beyond last index %d" % (index, last))
        del self.entries[: index - self.offset]
        self.offset = index
        self.offset_term = term

    def reset(self, index, term):
        self.entries = []
        self.offset = index
        self.offset_term = term


@implementer(IRaftLog)
class MemoryRaftLog:
    def __init__(self):
        self._state = _LogState()
        self._durable = _LogState()
        self._journal = []  # (method name, args) since the last sync
        self.sync_count = 0
        self._closed = False

    # ------------------------------------------------------------- reads --

    def hard_state(self):
        return self._state.hard_state

    def first_index(self):
        return self._state.offset + 1

    def last_index(self):
        return self._state.offset + len(self._state.entries)

    def term(self, index):
        s = self._state
        if index == s.offset:
            return s.offset_term
        pos = index - s.offset - 1
        if pos < 0 or pos >= len(s.entries):
            raise IndexError("term(%d) outside %d..%d" % (index, s.offset, self.last_index()))
        return s.entries[pos].term

    def entries(self, lo, hi, max_bytes=None):
        s = self._state
        if lo < s.offset + 1 or hi > self.last_index() + 1:
            raise IndexError("entries(%d, %d) outside %d..%d" % (
                lo, hi, s.offset + 1, self.last_index() + 1))
        if lo >= hi:
            return []
        start = lo - s.offset - 1
        stop = hi - s.offset - 1
        if max_bytes is None:
            return s.entries[start:stop]
        out = []
        size = 0
        for pos in range(start, stop):
            e = s.entries[pos]
            size += len(e.data)
            if size > max_bytes and out:
                break
            out.append(e)
        return out

    # ------------------------------------------------------------ writes --

    def set_hard_state(self, hard_state):
        self._check_open()
        self._state.hard_state = hard_state
        self._journal.append(("hard_state", hard_state))

    def append(self, entries):
        self._check_open()
        entries = list(entries)
        self._state.append(entries)
        self._journal.append(("append", entries))

    def compact(self, index, term):
        self._check_open()
        self._state.compact(index, term)
        self._journal.append(("compact", (index, term)))

    def reset(self, index, term):
        self._check_open()
        self._state.reset(index, term)
        self._journal.append(("reset", (index, term)))

    def sync(self):
        self._check_open()
        durable = self._durable
        for op, arg in self._journal:
            if op == "append":
                durable.append(arg)
            elif op == "hard_state":
                durable.hard_state = arg
            elif op == "compact":
                durable.compact(*arg)
            else:
                durable.reset(*arg)
        self._journal = []
        self.sync_count += 1

    # ---------------------------------------------------- crash modelling --

    def unsynced_writes(self):
        """How many writes a crash now would lose."""
        return len(self._journal)

    def lose_unsynced(self):
        """Simulate a crash: forget every write since the last `sync` (and
        reopen, so that a new Replica can be built on this log)."""
        self._state = self._durable.copy()
        self._journal = []
        self._closed = False

    def stats(self):
        return {"entries": len(self._state.entries), "bytes_on_disk": 0}

    def close(self):
        self._closed = True

    def _check_open(self):
        if self._closed:
            raise RuntimeError("log is closed")
