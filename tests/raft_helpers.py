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
