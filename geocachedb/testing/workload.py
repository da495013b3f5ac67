"""The simulated clients: a random put/get/delete workload whose every
operation is recorded for the linearizability checker.

Each `SimClient` runs one operation at a time against the node it is
connected to, over a small key space so that operations collide.  It sends
the `pb.Request` the real client library sends, and the node serves it with
the production request code (`geocachedb.server.requests`): a follower
forwards writes to the leader and answers from its own apply, waits for a
leader while none is known, and serves linearizable reads after ReadIndex.
The client behaves like the real client library:

* a write carries the client's session (client id, seq, ack floor); a
  ``NotLeader`` refusal (the node could not forward) means the entry was
  never appended, so the client follows the leader hint (or tries another
  node) with the same seq; after any other failure (``Unavailable``, the
  node crashing, the attempt timing out) the outcome is unknown: the client
  either sends the same write again — the state machine's session table
  must then apply it at most once — or gives up, and the operation is
  recorded with an unknown outcome;
* a read's value is the response's; a failed read did not happen (it is
  retried until the client's deadline, then dropped from the history).

Operations are stamped with a strictly increasing counter in event order, so
the history's real-time order is exact.
"""

from geocachedb.errors import NotLeader
from geocachedb.statemachine import encode_delete, encode_put
from geocachedb.testing.cluster import request_error
from geocachedb.testing.linearizability import DELETE, GET, PUT, History
from geocachedb.testing.revisions import RevisionWorkload
from geocachedb.wire import geocache_pb2 as pb


class WorkloadConfig:
    clients = 6
    keys = 3
    put_weight = 38
    get_weight = 50
    delete_weight = 12
    think_min = 1
    think_max = 30
    op_timeout = 600  # virtual time before a client gives up on an operation
    attempt_timeout = 200  # before one attempt is considered failed
    write_retry_probability = 0.6  # retry a write whose attempt failed (same seq)
    retry_delay = 20  # before trying another node when no leader is known
    max_padding = 200  # values get 0..max_padding extra bytes (batching by size)
    reconnect_probability = 0.05  # per operation: connect to another node
    # Clients of the data model (`geocachedb.testing.revisions`): txns on
    # counters, reads at old revisions, compactions.  0: none.
    revision_clients = 3

    def __init__(self, **options):
        for name, value in options.items():
            if not hasattr(WorkloadConfig, name):
                raise TypeError("unknown WorkloadConfig option %r" % (name,))
            setattr(self, name, value)


class _Pending:
    __slots__ = ("op_id", "kind", "key", "data", "request", "attempt", "deadline", "retry", "timer")

    def __init__(self, op_id, kind, key, data, request):
        self.op_id = op_id
        self.kind = kind
        self.key = key
        self.data = data  # the Command a write becomes (for the final checks)
        self.request = request
        self.attempt = 0
        self.deadline = None  # virtual time after which the client gives up
        self.retry = None
        self.timer = None  # the current attempt's timeout


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
        self._targets = None  # the nodes clients are configured with; None: all in service
        self.clients = [SimClient(self, n) for n in range(self.config.clients)]
        self.revisions = None
        self._all = list(self.clients)
        if self.config.revision_clients:
            self.revisions = RevisionWorkload(self, cluster.report, self.config.revision_clients)
            self._all += self.revisions.clients
        self.acknowledged = []  # (index, data, op_id): writes a client saw succeed
        self.running = False
        self.counts = {"invoked": 0, "ok": 0, "unknown": 0, "failed": 0, "redirects": 0, "retries": 0}

    def targets(self):
        """The node ids a client connects to."""
        return self._targets or self.cluster.client_targets()

    def stamp(self):
        self._clock += 1
        return self._clock

    def start(self):
        self.running = True
        for client in self._all:
            client.schedule_next()

    def stop(self):
        """No new operations; those in flight finish or time out."""
        self.running = False

    @property
    def idle(self):
        return all(c.pending is None for c in self._all)

    def node_crashed(self, node_id):
        for client in self._all:
            if client.pending is not None and client.node == node_id:
                client.connection_lost()

    def read_all(self, keys=None, targets=None):
        """Issue one read of every key (the final check), each from a
        client on a random node of `targets`: after healing, clients are
        configured with the members, as an operator does after a change of
        membership.  (A removed node left running may never learn of a
        leader again; requests sent there wait for one and fail.)"""
        if targets:
            self._targets = list(targets)
        for n, key in enumerate(keys or self.keys):
            client = self.clients[n % len(self.clients)]
            client.home = self.rng.choice(self.targets())
            client.invoke(GET, key)


class SimClient:
    def __init__(self, workload, number):
        self.workload = workload
        self.number = number
        # Session ids as the real client picks them: nonzero, per client.
        self.client_id = number + 1
        # The node this client is connected to.  Everything is sent there;
        # a NotLeader refusal (the node could not forward) sends it on to
        # the leader, and the next operation starts from home again.
        self.home = workload.rng.choice(workload.targets())
        self.node = self.home
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
        # One operation at a time, never retried once abandoned: every
        # earlier write is answered or given up, so the ack floor is this
        # operation's own seq.
        session = dict(client_id=self.client_id, seq=self.seq, ack_floor=self.seq)
        request = pb.Request()
        if kind == PUT:
            value = b"c%d-%d" % (self.number, self.seq)
            if w.config.max_padding:
                value += b"." * w.rng.randint(0, w.config.max_padding)
            data = encode_put(key, value, **session)
            request.put.key = key
            request.put.value = value
        elif kind == DELETE:
            data = encode_delete(key, **session)
            request.delete.key = key
        else:
            request.get.key = key
        if kind != GET:
            request.client_id, request.seq, request.ack_floor = self.client_id, self.seq, self.seq
        if w.rng.random() < w.config.reconnect_probability:
            self.home = w.rng.choice(w.targets())
        self.node = self.home
        op_id = w.history.invoke(self.number, kind, key, value, time=w.stamp())
        w.counts["invoked"] += 1
        pending = _Pending(op_id, kind, key, data, request)
        pending.deadline = w.scheduler.now + w.config.op_timeout
        self.pending = pending
        self._attempt()

    def _attempt(self):
        w = self.workload
        pending = self.pending
        pending.retry = None
        pending.attempt += 1
        attempt = pending.attempt
        w.scheduler.cancel(pending.timer)
        pending.timer = w.scheduler.after(
            min(w.config.attempt_timeout, max(0, pending.deadline - w.scheduler.now)),
            self._attempt_timeout, pending, attempt,
        )
        node = w.cluster.node(self.node)

        def done(response):
            self._done(pending, attempt, response)

        request = pb.Request()
        request.CopyFrom(pending.request)  # each attempt crosses the wire anew
        request.id = attempt
        if node is None or not node.handle(request, done):
            # Connection refused: nothing was sent, so try elsewhere.
            self._redirect(None)

    # -- outcomes

    def _current(self, pending, attempt):
        return self.pending is pending and pending.attempt == attempt

    def _done(self, pending, attempt, response):
        if not self._current(pending, attempt):
            return  # a late answer to an attempt already given up on
        w = self.workload
        error = request_error(response)
        if isinstance(error, NotLeader):
            # Refused before anything was appended: safe to send elsewhere.
            self._redirect(error.leader_id or None)
            return
        if error is not None:
            self._attempt_failed()
            return
        body = response.WhichOneof("body")
        expected = {GET: "get", PUT: "put", DELETE: "delete"}[pending.kind]
        if body != expected:
            w.cluster.report("client", "%s answered with %r" % (expected, response))
            self._attempt_failed()
            return
        index = None
        if pending.kind == GET:
            output = response.get.value if response.get.found else None
        elif pending.kind == PUT:
            output = None
            index = response.put.index
        else:
            output = response.delete.deleted
            index = response.delete.index
        if index is not None:
            w.acknowledged.append((index, pending.data, pending.op_id))
        w.history.complete(pending.op_id, output, time=w.stamp())
        w.counts["ok"] += 1
        self._end()

    def _redirect(self, leader_id):
        w = self.workload
        pending = self.pending
        w.counts["redirects"] += 1
        pending.attempt += 1  # any answer to the old attempt is stale now
        w.scheduler.cancel(pending.retry)
        ids = w.targets()
        if leader_id is not None and leader_id in ids and leader_id != self.node:
            self.node = leader_id
            delay = w.rng.randint(1, 5)
        else:
            self.node = w.rng.choice(ids)
            delay = w.rng.randint(w.config.retry_delay // 2, w.config.retry_delay)
        if w.scheduler.now + delay >= pending.deadline:
            self._finish_unknown()
            return
        pending.retry = w.scheduler.after(delay, self._attempt)

    def _attempt_timeout(self, pending, attempt):
        if self._current(pending, attempt):
            self._attempt_failed()

    def connection_lost(self):
        """The node this client's request is on crashed."""
        if self.pending.retry is None:  # else nothing is in flight there
            self._attempt_failed()

    def _attempt_failed(self):
        """This attempt's outcome is unknown (Unavailable, timeout, crash).
        A read did not happen and may be sent again; a write may still be
        applied, and is either given up (its outcome stays unknown) or sent
        again with the same session seq, which the state machine's
        deduplication table must apply at most once."""
        w = self.workload
        pending = self.pending
        if w.scheduler.now >= pending.deadline or (
            pending.kind != GET and w.rng.random() >= w.config.write_retry_probability
        ):
            self._finish_unknown()
            return
        w.counts["retries"] += 1
        self._redirect(None)

    def _finish_unknown(self):
        w = self.workload
        pending = self.pending
        # Like a real client after a timeout or a broken connection:
        # reconnect, perhaps to another node.
        self.home = w.rng.choice(w.targets())
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
        w.scheduler.cancel(pending.timer)
        w.scheduler.cancel(pending.retry)
        self.pending = None
        self.schedule_next()
