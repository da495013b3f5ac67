"""Every timeout of the server layer, on its one clock.

The server layer has one time base: its logical clock, which advances by one
on each `tick` (the host ticks every ``tick_seconds``: 0.1 s by default in
production, and at each simulated node's own drifting rate in the
simulator).  Election timeouts are counted in the same ticks by the Raft
core, so "two election timeouts" and "10 seconds" are both a number of
ticks here.

Waiters are grouped by their timeout: every waiter of one `DeadlineQueue`
has the same timeout, so insertion order is deadline order, and expiring is
a look at the oldest entries only.  Adding and settling a waiter are one
dict operation each, which matters on the write path (a follower keeps one
waiter per forwarded write; a heap or a timer per write cost more than the
forwarding itself).
"""


class DeadlineQueue:
    """Waiters with one timeout: ``key -> (deadline, value)`` in deadline
    order.  ``on_expire(key, value)`` is called for each waiter whose
    deadline passes before it is settled with `pop`."""

    __slots__ = ("timeout", "_clock", "_on_expire", "_waiting")

    def __init__(self, clock, timeout, on_expire):
        self.timeout = timeout
        self._clock = clock
        self._on_expire = on_expire
        self._waiting = {}

    def add(self, key, value):
        """Start waiting; a key already waiting starts its timeout again."""
        waiting = self._waiting
        if key in waiting:
            del waiting[key]  # to the end: deadline order is insertion order
        waiting[key] = (self._clock.now + self.timeout, value)

    def pop(self, key, default=None):
        """Settle ``key``: its value (no longer waiting), or ``default``."""
        entry = self._waiting.pop(key, None)
        return default if entry is None else entry[1]

    def get(self, key, default=None):
        entry = self._waiting.get(key)
        return default if entry is None else entry[1]

    def __contains__(self, key):
        return key in self._waiting

    def __len__(self):
        return len(self._waiting)

    def __bool__(self):
        return bool(self._waiting)

    def items(self):
        """``[(key, value)]`` in deadline order (a copy)."""
        return [(key, entry[1]) for key, entry in self._waiting.items()]

    def clear(self):
        """Drop every waiter without expiring it; returns ``[(key, value)]``."""
        items = self.items()
        self._waiting.clear()
        return items

    def expire(self, now):
        waiting = self._waiting
        if not waiting:
            return
        expired = []
        for key, (deadline, value) in waiting.items():
            if deadline > now:
                break
            expired.append((key, value))
        for key, value in expired:
            del waiting[key]
        for key, value in expired:
            self._on_expire(key, value)


class Deadlines:
    """The server layer's clock (``now``, in ticks) and its timeouts."""

    def __init__(self):
        self.now = 0
        self._queues = []

    def queue(self, timeout, on_expire):
        """A new `DeadlineQueue` of waiters that expire ``timeout`` ticks
        after they start waiting."""
        q = DeadlineQueue(self, max(1, int(timeout)), on_expire)
        self._queues.append(q)
        return q

    def tick(self):
        """Advance the clock by one and expire what is due."""
        self.now += 1
        now = self.now
        for q in self._queues:
            if q:
                q.expire(now)
