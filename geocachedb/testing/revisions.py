"""The simulator's checks of the multi-version data model: a workload of
transactions on counters, and invariants on revisions across replicas.

The per-key linearizability split of `geocachedb.testing.linearizability`
does not hold for multi-key transactions, so these clients are checked by
revision instead (acknowledged operations carry the revision they made or
read at):

* **pairs**: each counter is two keys, ``p<i>/a`` and ``p<i>/b``, only ever
  incremented together in one txn (blind, or compare-and-swap on the
  value last seen).  A range over the pair at any revision must show them
  equal (a txn is never applied half);
* **counts**: the acknowledged increments of a counter, in revision order,
  have strictly increasing values; its final value lies between the
  acknowledged increments and those plus the unknown outcomes (a retried
  txn applied twice, or a lost one, falls outside);
* **history reads**: a read at the revision an increment made returns the
  value that increment answered with (or COMPACTED);
* **real time**: a write acknowledged before another operation started has
  a lower revision than that operation's (equal at most, for a read).

`RevisionChecker` (fed by the recording state machine on every node) adds:
the revision after a given Raft index is the same on every replica, each
revision holds at least one event, the events of a revision are the same
bytes on every replica, and a node's retained history from its compaction
point on is complete.
"""

import bisect
import hashlib

from geocachedb.history_format import history_key
from geocachedb.testing.cluster import request_error
from geocachedb.errors import Compacted, FutureRevision, NotLeader
from geocachedb.wire import geocache_pb2 as pb

INCR, CAS, PAIR_READ, OLD_READ, COMPACT = "incr", "cas", "pair-read", "old-read", "compact"


def events_digest(stored, revision):
    """A digest of every event of ``revision`` (``stored(key)`` reads the
    node's storage), or None when it holds none."""
    digest = hashlib.blake2b(digest_size=16)
    sub = 0
    while True:
        data = stored(history_key(revision, sub))
        if data is None:
            break
        digest.update(data)
        sub += 1
    return digest.digest() if sub else None


class RevisionChecker:
    """Invariants of revisions across replicas (see the module docs)."""

    def __init__(self, report):
        self._report = report
        self.revision_at = {}  # raft index -> revision after it
        self.digests = {}  # revision -> digest of its events

    def applied(self, node, last_index, before, after, compact_revision, stored):
        seen = self.revision_at.setdefault(last_index, after)
        if seen != after:
            self._report("revision-divergence", "%s is at revision %d after index %d, another node at %d"
                         % (node, after, last_index, seen))
        # (Revisions a compaction in the same batch passed are gone.)
        for revision in range(max(before + 1, compact_revision), after + 1):
            digest = events_digest(stored, revision)
            if digest is None:
                self._report("revision-without-change",
                             "%s made revision %d without any change in it" % (node, revision))
                continue
            known = self.digests.setdefault(revision, digest)
            if known != digest:
                self._report("revision-divergence",
                             "%s holds other events at revision %d than another node" % (node, revision))

    def retained(self, node, space, stored):
        """At the end: every revision from the compaction point up is
        still complete on ``node``."""
        for revision in range(max(space.compact_revision, 1), space.revision + 1):
            digest = events_digest(stored, revision)
            known = self.digests.get(revision)
            if digest is None or (known is not None and digest != known):
                self._report("history-lost", "%s compacted at %d no longer holds revision %d whole"
                             % (node, space.compact_revision, revision))
                return


class _Op:
    __slots__ = ("kind", "pair", "request", "invoked", "attempt", "deadline", "timer", "retry", "extra")

    def __init__(self, kind, pair, request, invoked, deadline, extra=None):
        self.kind = kind
        self.pair = pair
        self.request = request
        self.invoked = invoked
        self.attempt = 0
        self.deadline = deadline
        self.timer = None
        self.retry = None
        self.extra = extra


def pair_keys(pair):
    return b"p%d/a" % pair, b"p%d/b" % pair


class RevisionWorkload:
    """Clients running transactions on ``pairs`` counters (see module docs)."""

    clients = 3
    pairs = 2
    think_min, think_max = 5, 40
    op_timeout = 600
    attempt_timeout = 200

    def __init__(self, workload, report, clients=None):
        self.w = workload
        self.clients = clients or self.clients
        self.report = report
        self.acked = {p: [] for p in range(self.pairs)}  # pair -> [(revision, value)]
        self.unknown = {p: 0 for p in range(self.pairs)}
        self.timeline = []  # (invoked, completed, revision, is_write)
        self.max_revision = 0
        self.ops = []
        self.clients = [_RevisionClient(self, 1000 + n) for n in range(self.clients)]
        self.counts = {"ok": 0, "unknown": 0, "cas-failed": 0, "compacted": 0}

    # -- final checks, on the settled members

    def check(self, state_machines):
        first = state_machines[0]
        for sm in state_machines[1:]:
            if (sm.revision, sm.scan()) != (first.revision, first.scan()):
                self.report("replica-divergence", "replicas differ at revision %d / %d"
                            % (first.revision, sm.revision))
        for pair in range(self.pairs):
            a, b = (first.get(k) for k in pair_keys(pair))
            a = int(a or 0)
            b = int(b or 0)
            if a != b:
                self.report("txn-atomicity", "pair %d ends at %d and %d" % (pair, a, b))
            acked = self.acked[pair]
            low, high = len(acked), len(acked) + self.unknown[pair]
            if not low <= a <= high:
                self.report("txn-count", "pair %d ends at %d, but %d increments were acknowledged "
                            "and %d are unknown" % (pair, a, low, high - low))
            ordered = sorted(acked)
            for (r1, v1), (r2, v2) in zip(ordered, ordered[1:]):
                if not (r1 < r2 and v1 < v2):
                    self.report("txn-order", "pair %d: increments at revisions %d and %d answered %d and %d"
                                % (pair, r1, r2, v1, v2))
                    break
        self._check_real_time()

    def _check_real_time(self):
        writes = sorted((c, r) for _, c, r, w in self.timeline if w)
        completed = [c for c, _ in writes]
        best = []
        top = 0
        for _, r in writes:
            top = max(top, r)
            best.append(top)
        for invoked, _, revision, is_write in self.timeline:
            i = bisect.bisect_left(completed, invoked)
            if not i:
                continue
            before = best[i - 1]
            if revision < before or (is_write and revision == before):
                self.report("revision-real-time", "an operation started after a write at revision %d "
                            "was acknowledged has revision %d" % (before, revision))
                return


class _RevisionClient:
    def __init__(self, owner, client_id):
        self.owner = owner
        self.client_id = client_id
        self.seq = 0
        self.pending = None
        self.node = None
        self.last_value = {}

    # Workload's client protocol: started, stopped, crashed nodes.

    def schedule_next(self):
        w = self.owner.w
        if w.running:
            w.scheduler.after(w.rng.randint(self.owner.think_min, self.owner.think_max), self._next)

    def connection_lost(self):
        if self.pending is not None and self.pending.retry is None:
            self._failed()

    def _next(self):
        w = self.owner.w
        if not w.running or self.pending is not None:
            return
        rng = w.rng
        pair = rng.randrange(self.owner.pairs)
        a, b = pair_keys(pair)
        roll = rng.random()
        request = pb.Request()
        extra = None
        if roll < 0.35:
            kind = INCR
            _incr_both(request.txn.success, a, b)
        elif roll < 0.55:
            kind = CAS
            c = request.txn.compare.add(key=a, target=pb.Compare.VALUE, result=pb.Compare.EQUAL)
            seen = self.last_value.get(pair)
            if seen is None:
                c.target = pb.Compare.VERSION
                c.version = 0
            else:
                c.value = b"%d" % seen
            _incr_both(request.txn.success, a, b)
        elif roll < 0.8:
            kind = PAIR_READ
            request.range.prefix = b"p%d/" % pair
        elif roll < 0.93 and self.owner.acked[pair]:
            kind = OLD_READ
            extra = rng.choice(self.owner.acked[pair])
            request.get.key = a
            request.get.revision = extra[0]
        else:
            kind = COMPACT
            top = self.owner.max_revision
            if top < 2:
                return self.schedule_next()
            request.compact.revision = max(1, top - rng.randint(0, 10))
        if kind in (INCR, CAS, COMPACT):
            self.seq += 1
            request.client_id, request.seq, request.ack_floor = self.client_id, self.seq, self.seq
        self.node = rng.choice(w.targets())
        self.pending = _Op(kind, pair, request, w.stamp(), w.scheduler.now + self.owner.op_timeout, extra)
        self._attempt()

    def _attempt(self):
        w = self.owner.w
        op = self.pending
        op.retry = None
        op.attempt += 1
        attempt = op.attempt
        w.scheduler.cancel(op.timer)
        op.timer = w.scheduler.after(
            min(self.owner.attempt_timeout, max(0, op.deadline - w.scheduler.now)),
            self._timeout, op, attempt)
        node = w.cluster.node(self.node)
        request = pb.Request()
        request.CopyFrom(op.request)
        request.id = attempt

        def done(response):
            if self.pending is op and op.attempt == attempt:
                self._done(op, response)

        if node is None or not node.handle(request, done):
            self._again(None)

    def _timeout(self, op, attempt):
        if self.pending is op and op.attempt == attempt:
            self._failed()

    def _again(self, leader_id):
        w = self.owner.w
        op = self.pending
        op.attempt += 1
        w.scheduler.cancel(op.retry)
        ids = w.targets()
        self.node = leader_id if leader_id in ids else w.rng.choice(ids)
        delay = w.rng.randint(1, 20)
        if w.scheduler.now + delay >= op.deadline:
            return self._unknown()
        op.retry = w.scheduler.after(delay, self._attempt)

    def _failed(self):
        w = self.owner.w
        op = self.pending
        if w.scheduler.now >= op.deadline:
            return self._unknown()
        self._again(None)  # a write is retried with the same seq: exactly once

    def _unknown(self):
        op = self.pending
        if op.kind in (INCR, CAS):
            # A CAS may have applied too: it counts as a possible increment.
            self.owner.unknown[op.pair] += 1
            self.last_value.pop(op.pair, None)
        self.owner.counts["unknown"] += 1
        self._end()

    def _done(self, op, response):
        owner = self.owner
        error = request_error(response)
        if isinstance(error, NotLeader):
            return self._again(error.leader_id or None)
        if isinstance(error, (Compacted, FutureRevision)) and op.kind in (OLD_READ, COMPACT):
            owner.counts["compacted"] += 1
            return self._end()
        if error is not None:
            return self._failed()
        revision = response.header.revision
        owner.max_revision = max(owner.max_revision, revision)
        completed = owner.w.stamp()
        if op.kind in (INCR, CAS):
            txn = response.txn
            if txn.succeeded:
                value = txn.responses[0].incr.value
                if txn.responses[1].incr.value != value:
                    owner.report("txn-atomicity", "one txn incremented pair %d to %d and %d"
                                 % (op.pair, value, txn.responses[1].incr.value))
                owner.acked[op.pair].append((revision, value))
                owner.timeline.append((op.invoked, completed, revision, True))
                self.last_value[op.pair] = value
            else:
                owner.counts["cas-failed"] += 1
                self.last_value.pop(op.pair, None)
        elif op.kind == PAIR_READ:
            values = {kv.key: kv.value for kv in response.range.kvs}
            a, b = (values.get(k) for k in pair_keys(op.pair))
            if a != b:
                owner.report("txn-atomicity", "pair %d read at revision %d: %r and %r"
                             % (op.pair, revision, a, b))
            owner.timeline.append((op.invoked, completed, revision, False))
            if a is not None:
                self.last_value[op.pair] = int(a)
        elif op.kind == OLD_READ:
            at, value = op.extra
            got = response.get.value if response.get.found else None
            if got != b"%d" % value:
                owner.report("history-read", "pair %d read at revision %d gives %r, the increment "
                             "there answered %d" % (op.pair, at, got, value))
        owner.counts["ok"] += 1
        self._end()

    def _end(self):
        w = self.owner.w
        op = self.pending
        w.scheduler.cancel(op.timer)
        w.scheduler.cancel(op.retry)
        self.pending = None
        self.schedule_next()


def _incr_both(ops, a, b):
    ops.add().incr.CopyFrom(pb.IncrRequest(key=a, delta=1))
    ops.add().incr.CopyFrom(pb.IncrRequest(key=b, delta=1))
