"""The simulator's clock and event queue.

Everything that happens in a simulation — a node's tick, a message arriving,
a client sending a request, a fault — is an event scheduled here at a
virtual time.  Events run one at a time in (time, insertion order) order, so
a run is a pure function of its seed: the scheduler owns the one
`random.Random` every other part of the simulator draws from.

Virtual time is an integer number of "microsteps"; nothing in the simulator
relates it to the wall clock.
"""

import heapq
import random


class Scheduler:
    def __init__(self, seed):
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0
        self._queue = []
        self._seq = 0
        self.events_run = 0

    def at(self, time, fn, *args):
        """Run ``fn(*args)`` at virtual ``time`` (not before now).  Returns a
        handle that `cancel` accepts."""
        time = max(int(time), self.now)
        self._seq += 1
        entry = [time, self._seq, fn, args]
        heapq.heappush(self._queue, entry)
        return entry

    def after(self, delay, fn, *args):
        return self.at(self.now + delay, fn, *args)

    @staticmethod
    def cancel(handle):
        # Lazy deletion: the entry stays in the heap but does nothing.
        if handle is not None:
            handle[2] = None

    def run_until(self, time, stop=None):
        """Run events up to and including virtual ``time``; with ``stop``, a
        callable checked after each event, return early once it is true.
        Returns True when stopped by ``stop``."""
        queue = self._queue
        while queue and queue[0][0] <= time:
            when, _, fn, args = heapq.heappop(queue)
            if fn is None:
                continue
            self.now = when
            self.events_run += 1
            fn(*args)
            if stop is not None and stop():
                return True
        self.now = max(self.now, time)
        return False

    def derive_rng(self):
        """A new independent `random.Random` seeded from this one (for each
        node's core), so the whole run still follows from the one seed."""
        return random.Random(self.rng.getrandbits(64))
