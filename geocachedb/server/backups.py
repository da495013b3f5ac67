"""Backups in progress on a node: snapshot streams a client pulls chunk by
chunk (``geocache-cli backup FILE``).

Each open backup holds a consistent storage snapshot (for LMDB, a read
transaction) until it is read to the end or left idle for `IDLE_SECONDS`;
at most `MAX_OPEN` are open at once, so a client cannot pin old versions
of the store without bound.
"""

import itertools

from geocachedb import errors

IDLE_SECONDS = 60.0
MAX_OPEN = 4


class Backups:
    """``deadlines``: the server layer's `Deadlines`; ``idle_ticks``: how
    long an untouched backup stays open (`IDLE_SECONDS` in ticks)."""

    def __init__(self, deadlines, idle_ticks):
        # id -> [chunks iterator, index], expiring when left idle
        self._open = deadlines.queue(idle_ticks, self._idle)
        self._ids = itertools.count(1)

    def open(self, meta, chunks):
        if len(self._open) >= MAX_OPEN:
            _close(chunks)
            raise errors.Unavailable("%d backups are already running on this node; try later" % MAX_OPEN)
        backup_id = next(self._ids)
        self._open.add(backup_id, [iter(chunks), meta.index])
        return backup_id

    def next_chunk(self, backup_id):
        """``(chunk, done, index)``; the backup closes after its last chunk."""
        entry = self._open.get(backup_id)
        if entry is None:
            raise errors.InvalidArgument("no backup %d on this node (finished, expired or never opened)" % backup_id)
        try:
            chunk = next(entry[0])
        except StopIteration:
            self._open.pop(backup_id)
            return b"", True, entry[1]
        self._open.add(backup_id, entry)  # used: its idle timeout starts again
        return chunk, False, entry[1]

    def _idle(self, backup_id, entry):
        _close(entry[0])

    def close_all(self):
        for _, entry in self._open.clear():
            _close(entry[0])


def _close(chunks):
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
