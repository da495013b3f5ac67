"""Counters and latency figures of one node, for `stats` in the admin shell.

Cheap enough for the request path: a dict increment per request and a
bounded reservoir of recent latencies (percentiles over the last
`WINDOW` requests).
"""

import collections
import gc
import time


class NodeMetrics:
    WINDOW = 4096

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.requests = collections.Counter()
        self.errors = collections.Counter()
        self.latencies = collections.deque(maxlen=self.WINDOW)
        self.batches = 0
        self.batch_entries = 0
        self.max_batch = 0

    def count_request(self, kind):
        self.requests[kind] += 1

    def count_error(self, code_name):
        self.errors[code_name] += 1

    def observe_latency(self, seconds):
        self.latencies.append(seconds)

    def observe_batch(self, entries):
        if entries:
            self.batches += 1
            self.batch_entries += entries
            self.max_batch = max(self.max_batch, entries)

    def latency_ms(self):
        data = sorted(self.latencies)
        if not data:
            return {"p50": None, "p90": None, "p99": None, "max": None}

        def pct(p):
            return round(percentile(data, p) * 1000.0, 3)

        return {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": round(data[-1] * 1000.0, 3)}

    def batch_sizes(self):
        mean = self.batch_entries / self.batches if self.batches else 0.0
        return {"mean": round(mean, 2), "max": self.max_batch, "batches": self.batches}


class GCPauses:
    """How long Python's cyclic garbage collector stopped the node: counts,
    total and longest pause (ms) per generation, from `gc.callbacks`.  A
    full collection walks every tracked object and stops the reactor while
    it runs, so it shows up directly in request latency."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self._started = None
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]

    def install(self):
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self):
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase, info):
        if phase == "start":
            self._started = self.clock()
        elif self._started is not None:
            pause = self.clock() - self._started
            self._started = None
            generation = info["generation"]
            self.count[generation] += 1
            self.total[generation] += pause
            if pause > self.longest[generation]:
                self.longest[generation] = pause

    def summary(self):
        """One line for `stats`: per generation, collections (total ms,
        longest ms)."""
        return "; ".join(
            "gen%d %d (%.1f ms, longest %.2f ms)"
            % (g, self.count[g], 1000.0 * self.total[g], 1000.0 * self.longest[g])
            for g in range(3)
        )


def fsync_summary(log_stats):
    """The Raft log's fsync times for `stats`: total and mean since start,
    p99 of the last `FSYNC_WINDOW`, longest (one line, milliseconds)."""
    count = log_stats.get("fsyncs", 0)
    total = log_stats.get("fsync_seconds")
    if total is None:
        return "-"  # a log that does not time its fsyncs (in memory)
    p99 = percentile(sorted(log_stats.get("fsync_recent_seconds") or [0.0]), 0.99)
    return "total %.1f  mean %.3f  p99 %.3f  max %.3f" % (
        1e3 * total, 1e3 * total / count if count else 0.0, 1e3 * p99,
        1e3 * log_stats.get("fsync_max_seconds", 0.0))


def percentile(data, p):
    """The ``p`` quantile (0..1) of ``data``, a non-empty sorted list."""
    return data[min(len(data) - 1, int(p * len(data)))]
