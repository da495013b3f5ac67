"""Counters and latency figures of one node, for `stats` in the admin shell.

Cheap enough for the request path: a dict increment per request and a
bounded reservoir of recent latencies (percentiles over the last
`WINDOW` requests).
"""

import collections
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
            return round(data[min(len(data) - 1, int(p * len(data)))] * 1000.0, 3)

        return {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": round(data[-1] * 1000.0, 3)}

    def batch_sizes(self):
        mean = self.batch_entries / self.batches if self.batches else 0.0
        return {"mean": round(mean, 2), "max": self.max_batch, "batches": self.batches}
