"""One node's server logic, with no reactor: the Raft host loop, client
requests, forwarding, the wait for a leader, membership and backups, on one
injected clock.

The Twisted node (`geocachedb.node.node`) and the simulator
(`geocachedb.testing.cluster`) both run exactly this; they differ only in
what is behind its seams:

* the `IRaftLog` (a WAL, or a simulated disk that loses unsynced writes);
* the `IPeerTransport` (TCP connections, or the simulated network);
* the `IStateMachine`'s storage (LMDB or the B+tree, or memory);
* the clock: whoever calls `tick` (every ``tick_seconds`` from a
  `TimerService`, or the simulator's scheduler at each node's own rate);
* ``schedule``: how "run `process` soon" is done (at the end of the reactor
  turn, or after a random simulated delay).

Inputs: `handle` (a client request), `receive` (a Raft message),
`proposals_received`, `forward_received`, `forward_answered`, `peer_lost`
(from peers), `tick`.  After any of them the host calls `process` (once
for a burst: group commit), which drains the replica's Ready batches and
sends the writes queued for the leader.
"""

import itertools
import logging

from geocachedb import errors
from geocachedb.limits import MAX_VALUE_SIZE
from geocachedb.raft.types import LEADER
from geocachedb.server.backups import IDLE_SECONDS, Backups
from geocachedb.server.compaction import AutoCompaction
from geocachedb.server.deadlines import Deadlines
from geocachedb.server.forwarding import Forwarding
from geocachedb.server.membership import Membership
from geocachedb.server.metrics import NodeMetrics
from geocachedb.server.replica import Replica
from geocachedb.server.requests import RequestHandler

log = logging.getLogger("geocachedb.server")

# Requests that arrive while no leader is known wait this many election
# timeouts for one before failing with UNAVAILABLE.
LEADER_WAIT_ELECTIONS = 2
MAX_WAITING = 10000


class Server:
    def __init__(self, node_id, voters, raft_log, transport, state_machine, rng, raft_config,
                 schedule, ticks_per_second, snapshot_store=None, addresses=None,
                 max_value=MAX_VALUE_SIZE, metrics=None, cluster_name="geocache",
                 auto_compact_revisions=0):
        """``voters`` bootstrap a new cluster (empty for a node that joins
        one); ``addresses`` (node id -> HOST:PORT, this node's own included)
        are where members listen until the configuration records them;
        ``ticks_per_second`` turns the timeouts stated in seconds into
        ticks of this server's clock; ``cluster_name`` gives the
        cluster id of every response header; ``auto_compact_revisions``
        (0: off) is how many revisions of history the leader keeps."""
        self.node_id = node_id
        self.cluster_name = cluster_name
        self.deadlines = Deadlines()
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.state_machine = state_machine
        self.transport = transport
        self.schedule = schedule
        self._addresses = dict(addresses or {})
        self.replica = Replica(
            node_id, voters, raft_log, transport, state_machine, rng, raft_config,
            snapshot_store=snapshot_store, addresses=self._addresses, deadlines=self.deadlines,
        )
        election_ticks = self.replica.config.election_ticks
        self._waiting = self.deadlines.queue(LEADER_WAIT_ELECTIONS * election_ticks, self._wait_expired)
        self._wait_ids = itertools.count(1)
        self.forwarding = Forwarding(self, transport, self.deadlines, ticks_per_second, rng, max_value)
        self.replica.on_apply = self.forwarding.applied
        self.membership = Membership(self)
        self.backups = Backups(self.deadlines, IDLE_SECONDS * ticks_per_second)
        self.requests = RequestHandler(self, max_value=max_value)
        self.compaction = AutoCompaction(self, auto_compact_revisions, ticks_per_second)
        self.handle = self.requests.handle
        self._known_config = None
        self._closed = False

    # ------------------------------------------------------------- inputs --

    def tick(self):
        """One tick of this server's clock (and every timeout it ends)."""
        self.replica.tick()
        self.compaction.tick()
        self.schedule()

    def receive(self, message):
        """A Raft message from a peer."""
        self.replica.receive(message)
        self.schedule()

    def proposals_received(self, commands):
        """Client writes a follower sent this node to propose."""
        self.forwarding.proposals_received(commands)

    def forward_received(self, peer_id, forward_id, request):
        """A request a follower could not serve; the response goes back to
        it through the transport."""
        transport = self.transport

        def respond(response):
            transport.send_forward_response(peer_id, forward_id, response)

        self.handle(request, respond, forwarded=True)

    def forward_answered(self, forward_id, response):
        self.forwarding.answered(forward_id, response)

    def peer_lost(self, peer_id):
        self.forwarding.peer_lost(peer_id)

    def process(self):
        """Run the replica's Ready loop, then send what is queued for the
        leader and retry requests that waited for one."""
        replica = self.replica
        replica.process()
        self.forwarding.send_queued()
        if self._waiting and replica.leader_id is not None:
            for _, retry in self._waiting.clear():
                retry(expired=False)
        config = replica.core.membership  # replaced, never changed in place
        if config is not self._known_config:
            self._known_config = config
            self.transport.update_members(replica.addresses(), [m for m, _ in replica.members()])

    # ---------------------------------------------------- the request path --

    def leader_aware(self, start, callback):
        """Run ``start(on_done)`` against the replica.  While no leader is
        known the request waits (bounded) for an election instead of
        failing at once; a NOT_LEADER error gets the leader's address."""

        def on_done(result, error):
            if isinstance(error, errors.NotLeader):
                if not error.leader_id:
                    return self._wait_for_leader(retry, callback)
                error.leader_addr = error.leader_addr or self.address_of(error.leader_id)
            callback(result, error)

        def retry(expired):
            if expired:
                callback(None, errors.Unavailable("no leader elected; try again"))
            else:
                self.leader_aware(start, callback)

        start(on_done)
        self.schedule()

    def _wait_for_leader(self, retry, callback):
        if len(self._waiting) >= MAX_WAITING:
            callback(None, errors.Unavailable("no leader, and too many requests are waiting for one"))
            return
        self._waiting.add(next(self._wait_ids), retry)

    def _wait_expired(self, _, retry):
        retry(expired=True)

    def submit_write(self, data, callback):
        """Replicate ``data`` (an encoded Command); ``callback(result,
        error)`` once it is applied here, or with the error (NOT_LEADER on a
        follower: the caller may forward the request to the leader)."""
        replica = self.replica
        if replica.core.role == LEADER:
            # The common case, once per write: no waiting for an election
            # can be needed, so none of `leader_aware`'s closures.
            replica.propose(data, callback)
            self.schedule()
            return
        self.leader_aware(lambda done: replica.propose(data, done), callback)

    def read_barrier(self, callback):
        """``callback(None, None)`` once a linearizable read may be served
        from the local state machine."""
        self.leader_aware(self.replica.read_barrier, callback)

    def leader_elsewhere(self):
        """The leader's id when another node leads and this one knows it
        (a write received here is better forwarded at once), else None."""
        leader = self.replica.leader_id
        if leader is None or leader == self.node_id:
            return None
        return leader

    def address_of(self, node_id):
        """Where ``node_id`` listens: as this node was told at start, else
        as the configuration records it."""
        return self._addresses.get(node_id) or self.replica.addresses().get(node_id, "")

    # -------------------------------------------------- operator commands --

    def compact(self, keep=None):
        """Compact the log now (admin ``snapshot``/``compact``)."""
        return self.replica.compact(keep)

    def log_failure(self, what):
        log.exception(what)

    def close(self, why="node is shutting down"):
        """Fail every waiter (their outcome is unknown) and release what
        snapshots and backups hold.  Call before closing the storage."""
        if self._closed:
            return
        self._closed = True
        for _, retry in self._waiting.clear():
            retry(expired=True)
        self.forwarding.close(why)
        self.backups.close_all()
        self.replica.close()
