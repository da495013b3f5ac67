"""The simulated clients: a random put/get/delete workload whose every
operation is recorded for the linearizability checker.

Each `SimClient` runs one operation at a time against the node it is
attached to, over a small key space so that operations collide.  It behaves
like the real client library and the node's forwarding together:

* a write goes to ``Replica.propose``; a ``NotLeader`` refusal means the
  entry was never appended, so the client follows the leader hint (or tries
  another node) and retries the *same* operation; any other failure
  (``Unavailable``, the node crashing, the client's own deadline) leaves the
  outcome unknown — the write may still be applied — and is recorded so;
* a read waits for ``Replica.read_barrier`` and then reads the node's
  state machine; a failed read did not happen and is dropped from the
  history.

Operations are stamped with a strictly increasing counter in event order, so
the history's real-time order is exact.
"""

from geocachedb.errors import NotLeader
from geocachedb.statemachine import DeleteResult, PutResult, encode_delete, encode_put
from geocachedb.testing.linearizability import DELETE, GET, PUT, History


class WorkloadConfig:
    clients = 6
    keys = 3
    put_weight = 38
    get_weight = 50
    delete_weight = 12
    think_min = 1
    think_max = 30
    op_timeout = 400  # virtual time; a few election timeouts
    retry_delay = 20  # before trying another node when no leader is known

    def __init__(self, **options):
        for name, value in options.items():
            if not hasattr(WorkloadConfig, name):
                raise TypeError("unknown WorkloadConfig option %r" % (name,))
            setattr(self, name, value)


class _Pending:
    __slots__ = ("op_id", "kind", "key", "data", "attempt", "deadline", "retry")

    def __init__(self, op_id, kind, key, data):
        self.op_id = op_id
        self.kind = kind
        self.key = key
        self.data = data
        self.attempt = 0
        self.deadline = None
        self.retry = None


class Workload:
    """All clients, the history they write, and the acknowledged writes."""

    def __init__(self, scheduler, cluster, config=None):
        self.scheduler = scheduler
        self.rng = scheduler.rng
        self.cluster = cluster
        self.config = config or WorkloadConfig()
        self.history = History()
        self.keys = [b"k%d" % n for n in range(self.config.keys)]
        self._clock = 0
        self.clients = [SimClient(self, n) for n in range(self.config.clients)]
        self.acknowledged = []  # (index, data, op_id): writes a client saw succeed
        self.running = False
        self.counts = {"invoked": 0, "ok": 0, "unknown": 0, "failed": 0, "redirects": 0}

    def stamp(self):
        self._clock += 1
        return self._clock

    def start(self):
        self.running = True
        for client in self.clients:
            client.schedule_next()

    def stop(self):
        """No new operations; those in flight finish or time out."""
        self.running = False

    @property
    def idle(self):
        return all(c.pending is None for c in self.clients)

    def node_crashed(self, node_id):
        for client in self.clients:
            if client.pending is not None and client.node == node_id:
                client.connection_lost()

    def read_all(self, keys=None):
        """Issue one read of every key (the final check), each from a
        client on a random node."""
        for n, key in enumerate(keys or self.keys):
            client = self.clients[n % len(self.clients)]
            client.node = self.rng.choice(self.cluster.node_ids)
            client.invoke(GET, key)


class SimClient:
    def __init__(self, workload, number):
        self.workload = workload
        self.number = number
        self.node = workload.rng.choice(workload.cluster.node_ids)
        self.pending = None
        self.seq = 0

    # -- choosing and starting operations

    def schedule_next(self):
        w = self.workload
        if not w.running:
            return
        delay = w.rng.randint(w.config.think_min, w.config.think_max)
        w.scheduler.after(delay, self._next)

    def _next(self):
        w = self.workload
        if not w.running or self.pending is not None:
            return
        cfg = w.config
        rng = w.rng
        roll = rng.randrange(cfg.put_weight + cfg.get_weight + cfg.delete_weight)
        key = rng.choice(w.keys)
        if roll < cfg.put_weight:
            kind = PUT
        elif roll < cfg.put_weight + cfg.get_weight:
            kind = GET
        else:
            kind = DELETE
        self.invoke(kind, key)

    def invoke(self, kind, key):
        w = self.workload
        self.seq += 1
        value = None
        data = None
        if kind == PUT:
            value = b"c%d-%d" % (self.number, self.seq)
            data = encode_put(key, value, client_id=self.number + 1, seq=self.seq)
        elif kind == DELETE:
            data = encode_delete(key, client_id=self.number + 1, seq=self.seq)
        op_id = w.history.invoke(self.number, kind, key, value, time=w.stamp())
        w.counts["invoked"] += 1
        pending = _Pending(op_id, kind, key, data)
        pending.deadline = w.scheduler.after(w.config.op_timeout, self._timeout, pending)
        self.pending = pending
        self._attempt()

    def _attempt(self):
        pending = self.pending
        pending.retry = None
        pending.attempt += 1
        attempt = pending.attempt
        node = self.workload.cluster.node(self.node)
        if node is None or not node.up:
            # Connection refused: nothing was sent, so try elsewhere.
            self._redirect(None)
            return

        def done(result, error):
            self._done(pending, attempt, result, error)

        if pending.kind == GET:
            node.read_barrier(done)
        else:
            node.propose(pending.data, done)

    # -- outcomes

    def _current(self, pending, attempt):
        return self.pending is pending and pending.attempt == attempt

    def _done(self, pending, attempt, result, error):
        if not self._current(pending, attempt):
            return  # a late answer to an attempt already given up on
        w = self.workload
        if isinstance(error, NotLeader):
            self._redirect(error.leader_id or None)
            return
        if error is not None:
            self._finish_unknown()
            return
        if pending.kind == GET:
            node = w.cluster.node(self.node)
            output = node.state_machine.get(pending.key)
        elif pending.kind == PUT:
            if not isinstance(result, PutResult):
                w.cluster.report("client", "put answered with %r" % (result,))
            output = None
        else:
            if not isinstance(result, DeleteResult):
                w.cluster.report("client", "delete answered with %r" % (result,))
                output = None
            else:
                output = result.deleted
        if pending.kind != GET and result is not None:
            w.acknowledged.append((result.index, pending.data, pending.op_id))
        w.history.complete(pending.op_id, output, time=w.stamp())
        w.counts["ok"] += 1
        self._end()

    def _redirect(self, leader_id):
        w = self.workload
        pending = self.pending
        w.counts["redirects"] += 1
        pending.attempt += 1  # any answer to the old attempt is stale now
        ids = w.cluster.node_ids
        if leader_id is not None and leader_id in ids and leader_id != self.node:
            self.node = leader_id
            delay = w.rng.randint(1, 5)
        else:
            self.node = w.rng.choice(ids)
            delay = w.rng.randint(w.config.retry_delay // 2, w.config.retry_delay)
        pending.retry = w.scheduler.after(delay, self._attempt)

    def _timeout(self, pending):
        if self.pending is pending:
            self._finish_unknown()

    def connection_lost(self):
        """The node this client's request is on crashed."""
        self._finish_unknown()

    def _finish_unknown(self):
        w = self.workload
        pending = self.pending
        # Like a real client after a timeout or a broken connection: try
        # another node next time.
        self.node = w.rng.choice(w.cluster.node_ids)
        if pending.kind == GET:
            w.history.fail(pending.op_id)
            w.counts["failed"] += 1
        else:
            w.history.unknown(pending.op_id)
            w.counts["unknown"] += 1
        self._end()

    def _end(self):
        w = self.workload
        pending = self.pending
        w.scheduler.cancel(pending.deadline)
        w.scheduler.cancel(pending.retry)
        self.pending = None
        self.schedule_next()
