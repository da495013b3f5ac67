"""A tiny in-memory network of Raft cores for step-by-step unit tests, in the
style of etcd-io/raft's raft_test.go `network`: messages are delivered one
at a time, in order, until none are left; links can be cut, nodes isolated,
and a hook can drop or inspect any message.

Each core has its own `MemoryRaftLog`; after every step the network drains
the core's Ready batches the way the real host does (persist + sync, then
messages, then "apply" by recording, then advance).
"""

import random

from geocachedb.raft import types as t
from geocachedb.raft.core import RaftCore
from geocachedb.raft.memlog import MemoryRaftLog
from geocachedb.raft.types import Entry, HardState, Message, RaftConfig


def config(**kw):
    kw.setdefault("election_ticks", 10)
    kw.setdefault("heartbeat_ticks", 1)
    return RaftConfig(**kw)


def log_with(entries_terms, hard_state=None):
    """A synced MemoryRaftLog holding entries with the given terms (index 1..)."""
    log = MemoryRaftLog()
    log.append([Entry(i + 1, term, b"e%d" % (i + 1)) for i, term in enumerate(entries_terms)])
    if hard_state is not None:
        log.set_hard_state(hard_state)
    log.sync()
    return log


def new_core(node_id, ids, log=None, seed=None, applied=0, **kw):
    log = log if log is not None else MemoryRaftLog()
    rng = random.Random(seed if seed is not None else hash_id(node_id))
    return RaftCore(node_id, ids, log, config(**kw), rng, applied=applied)


def hash_id(node_id):
    # deterministic across processes (str hash is salted)
    return sum(ord(c) * 31 ** i for i, c in enumerate(node_id))


def drain(core, applied=None):
    """Run every Ready of ``core`` like the host does; return the messages
    in send order (early ones first)."""
    out = []
    storage = core.log.storage
    while core.has_ready():
        rd = core.ready()
        out.extend(rd.messages_before_sync)
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        if rd.must_sync:
            storage.sync()
        out.extend(rd.messages)
        if applied is not None:
            applied.extend(rd.committed_entries)
        core.advance(rd)
        if rd.read_states and hasattr(core, "read_states_seen"):
            core.read_states_seen.extend(rd.read_states)
    return out


class Network:
    def __init__(self, ids, logs=None, **kw):
        self.ids = list(ids)
        self.cores = {}
        self.applied = {}
        self.read_states = {}
        self.snapshot_requests = {}  # leader -> peers it asked snapshots for
        self.snapshot_chunks = {}  # follower -> SNAPSHOT messages handed to its host
        for node_id in self.ids:
            log = (logs or {}).get(node_id)
            self.cores[node_id] = new_core(node_id, self.ids, log, **kw)
            self.applied[node_id] = []
            self.read_states[node_id] = []
        self.cut = set()  # (frm, to) links that drop everything
        self.hook = None  # hook(message) -> False to drop
        self.sent = []       # every message sent, delivered or not
        self.delivered = []  # every message delivered

    # -- topology --

    def isolate(self, node_id):
        for other in self.ids:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def cut_link(self, a, b):
        self.cut.add((a, b))
        self.cut.add((b, a))

    def heal(self):
        self.cut.clear()

    # -- driving --

    def drain(self, node_id):
        core = self.cores[node_id]
        out = []
        while core.has_ready():
            rd = core.ready()
            out.extend(rd.messages_before_sync)
            storage = core.log.storage
            if rd.entries:
                storage.append(rd.entries)
            if rd.hard_state is not None:
                storage.set_hard_state(rd.hard_state)
            if rd.must_sync:
                storage.sync()
            out.extend(rd.messages)
            self.applied[node_id].extend(rd.committed_entries)
            self.read_states[node_id].extend(rd.read_states)
            self.snapshot_requests.setdefault(node_id, []).extend(rd.snapshot_requests)
            self.snapshot_chunks.setdefault(node_id, []).extend(rd.snapshot_chunks)
            core.advance(rd)
        return out

    def send(self, *messages):
        queue = list(messages)
        while queue:
            m = queue.pop(0)
            self.sent.append(m)
            if (m.frm, m.to) in self.cut or m.to not in self.cores:
                continue
            if self.hook is not None and self.hook(m) is False:
                continue
            self.delivered.append(m)
            self.cores[m.to].step(m)
            queue.extend(self.drain(m.to))

    def flush(self, node_id):
        self.send(*self.drain(node_id))

    def tick(self, node_id, n=1):
        for _ in range(n):
            self.cores[node_id].tick()
            self.flush(node_id)

    def campaign(self, node_id):
        self.cores[node_id].campaign()
        self.flush(node_id)

    def propose(self, node_id, data=b"x"):
        index = self.cores[node_id].propose(data)
        self.flush(node_id)
        return index

    def read_index(self, node_id, context):
        ok = self.cores[node_id].read_index(context)
        self.flush(node_id)
        return ok

    def drop(self, predicate):
        """Drop every message for which ``predicate(m)`` is true."""
        self.hook = lambda m: not predicate(m)

    def hold(self, predicate):
        """Keep back (in the returned list) every message matching ``predicate``."""
        held = []

        def hook(m):
            if predicate(m):
                held.append(m)
                return False
            return True

        self.hook = hook
        return held

    def sent_to(self, node_id, type=None):
        return [m for m in self.sent if m.to == node_id and (type is None or m.type == type)]

    def leader(self):
        leaders = [i for i in self.ids if self.cores[i].role == t.LEADER]
        return leaders

    def elect(self, node_id):
        self.campaign(node_id)
        assert self.cores[node_id].role == t.LEADER, self.cores[node_id].role
        return self.cores[node_id]


__all__ = ["Network", "new_core", "drain", "log_with", "config", "Message", "Entry",
           "HardState", "t"]


# ------------------------------------------------------------------------
# Replicas: the host loop over in-memory logs, storage and snapshot stores.


class ReplicaNet:
    """Whole `Replica`s (core + host loop) on a queue-based wire, for the
    rules that need the host: compaction, InstallSnapshot, membership,
    leadership transfer.  ``crash(id)`` loses what was not synced (log) or
    not finished (snapshot spool) and builds a new Replica on what is left,
    like a restart."""

    def __init__(self, ids, seed=1, **cfg):
        from geocachedb.raft.memlog import MemoryRaftLog
        from geocachedb.snapshots import MemorySnapshotStore
        from geocachedb.storage.memory import MemoryStorage

        cfg.setdefault("election_ticks", 10)
        self.config = RaftConfig(**cfg)
        self.ids = list(ids)
        self.seed = seed
        self.queue = []
        self.cut = set()
        self.hook = None
        self.sent = []
        self.logs, self.storages, self.stores, self.replicas = {}, {}, {}, {}
        self.incarnation = {}
        self._new_log = MemoryRaftLog
        self._new_storage = MemoryStorage
        self._new_store = MemorySnapshotStore
        for node_id in self.ids:
            self.add_node(node_id, voters=self.ids)

    def add_node(self, node_id, voters=(), learners=()):
        self.logs[node_id] = self._new_log()
        self.storages[node_id] = self._new_storage()
        self.stores[node_id] = self._new_store()
        self.incarnation[node_id] = 0
        self._voters = getattr(self, "_voters", {})
        self._voters[node_id] = (list(voters), list(learners))
        return self.start(node_id)

    def start(self, node_id):
        from geocachedb.server.replica import Replica
        from geocachedb.statemachine import KVStateMachine

        self.incarnation[node_id] += 1
        voters, learners = self._voters[node_id]
        r = Replica(node_id, voters, self.logs[node_id], self, KVStateMachine(self.storages[node_id]),
                    random.Random("%s-%s-%d" % (self.seed, node_id, self.incarnation[node_id])),
                    self.config, snapshot_store=self.stores[node_id], learners=learners)
        self.replicas[node_id] = r
        return r

    def crash(self, node_id):
        self.replicas.pop(node_id, None)
        self.logs[node_id].lose_unsynced()
        self.stores[node_id].crash()

    def restart(self, node_id):
        self.crash(node_id)
        return self.start(node_id)

    # IPeerTransport
    def send(self, message):
        self.queue.append(message)

    def isolate(self, node_id):
        for other in self.replicas:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def heal(self):
        self.cut.clear()

    def process(self):
        for node_id in sorted(self.replicas):
            self.replicas[node_id].process()

    def deliver(self, rounds=10000):
        self.process()
        for _ in range(rounds):
            if not self.queue:
                return
            queue, self.queue = self.queue, []
            for m in queue:
                self.sent.append(m)
                if (m.frm, m.to) in self.cut or m.to not in self.replicas:
                    continue
                if self.hook is not None and self.hook(m) is False:
                    continue
                self.replicas[m.to].receive(m)
            self.process()
        raise AssertionError("messages keep flowing")

    def tick(self, n=1):
        for _ in range(n):
            for node_id in sorted(self.replicas):
                self.replicas[node_id].tick()
            self.deliver()

    def leader(self):
        leaders = [r for r in self.replicas.values() if r.role == t.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    def until_leader(self, max_ticks=300):
        for _ in range(max_ticks):
            leader = self.leader()
            if leader is not None and all(
                    r.leader_id == leader.node_id for r in self.replicas.values()
                    if r.node_id in leader.core.membership and (r.node_id, leader.node_id) not in self.cut):
                return leader
            self.tick()
        raise AssertionError("no leader")

    def put(self, key, value, via=None):
        from geocachedb.statemachine import encode_put

        out = []
        replica = via or self.until_leader()
        replica.propose(encode_put(key, value), lambda r, e: out.append((r, e)))
        self.deliver()
        return out

    def write_many(self, n, prefix=b"k"):
        leader = self.until_leader()
        results = []
        for i in range(n):
            from geocachedb.statemachine import encode_put

            leader.propose(encode_put(b"%s%d" % (prefix, i), b"v%d" % i),
                           lambda r, e: results.append((r, e)))
            if i % 10 == 9:
                self.deliver()
        self.deliver()
        return results

    def conf_change(self, kind, node_id, via=None):
        out = []
        replica = via or self.until_leader()
        replica.propose_conf_change(kind, node_id, lambda r, e: out.append((r, e)))
        self.deliver()
        return out

    def data(self, node_id):
        return self.storages[node_id].scan()


def stored_value(storage, key):
    """The value of user key ``key`` in what ``storage`` itself holds (its
    history, without the state machine's pending writes), or None."""
    from geocachedb.mvcc import KeySpace

    space = KeySpace(storage.get)
    space.load(storage)
    kv = space.get(key)
    return None if kv is None else kv.value
