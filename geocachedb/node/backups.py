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
    def __init__(self, clock):
        self._clock = clock  # a callable returning seconds
        self._open = {}  # id -> [chunks iterator, index, last used]
        self._ids = itertools.count(1)

    def open(self, meta, chunks):
        self.expire()
        if len(self._open) >= MAX_OPEN:
            _close(chunks)
            raise errors.Unavailable("%d backups are already running on this node; try later" % MAX_OPEN)
        backup_id = next(self._ids)
        self._open[backup_id] = [iter(chunks), meta.index, self._clock()]
        return backup_id

    def next_chunk(self, backup_id):
        """``(chunk, done, index)``; the backup closes after its last chunk."""
        entry = self._open.get(backup_id)
        if entry is None:
            raise errors.InvalidArgument("no backup %d on this node (finished, expired or never opened)" % backup_id)
        entry[2] = self._clock()
        try:
            chunk = next(entry[0])
        except StopIteration:
            del self._open[backup_id]
            return b"", True, entry[1]
        return chunk, False, entry[1]

    def expire(self):
        now = self._clock()
        for backup_id, entry in list(self._open.items()):
            if now - entry[2] > IDLE_SECONDS:
                del self._open[backup_id]
                _close(entry[0])

    def close_all(self):
        for entry in self._open.values():
            _close(entry[0])
        self._open.clear()


def _close(chunks):
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
