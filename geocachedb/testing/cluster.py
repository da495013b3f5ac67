"""The simulated cluster: real `Server`s on simulated disk, network and
clock.

A `SimNode` is what a `twistd geocache` process is in production, minus the
reactor: it owns a `SimDisk` (the Raft log), a `MemoryStorage` under the
real `KVStateMachine`, a `SimTransport`, and the `geocachedb.server.Server`
— the very server layer the Twisted node hosts: the Raft host loop, client
request handling, forwarding to the leader, the wait for a leader, the
deadlines, membership.  Simulated clients and the operator send it
`pb.Request`s (`handle`), as the client protocol and the admin shell do.
Like the Twisted node it calls ``server.process()`` once after a burst of
inputs (here: a short, random time after the first input, so several
messages may share one batch and one fsync).  Ticks come from the
scheduler at a per-node rate, so clocks drift.

A crash drops the `Server` object (its memory is gone), keeps the storage
(every `apply_batch` was durable), the disk's durable image and a finished
incoming snapshot (`MemorySnapshotStore`: a partial spool is lost), and
throws away unsynced log writes.  A crash can also be *armed* to fire at the k-th
next I/O (a sync or a send), which lands it in the middle of a batch.  A
restart builds a new `Server` from what survived, as a real restart would.
"""

from geocachedb import errors
from geocachedb.raft.types import RaftConfig
from geocachedb.server.server import Server
from geocachedb.snapshots import MemorySnapshotStore
from geocachedb.statemachine import KVStateMachine
from geocachedb.storage.memory import MemoryStorage
from geocachedb.testing.disk import SimDisk, SimulatedCrash
from geocachedb.testing.network import Parcel
from geocachedb.wire import geocache_pb2 as pb


class RecordingStateMachine(KVStateMachine):
    """The production state machine, reporting each batch to the invariant
    checker before applying it."""

    def __init__(self, storage, node_id, checker, write_behind=0):
        super().__init__(storage, write_behind=write_behind)
        self._node_id = node_id
        self._checker = checker

    def apply(self, entries):
        if not entries:
            return super().apply(entries)
        # Applied so far: in storage, or (write-behind) still in memory.
        self._checker.applying(self._node_id, entries, self.applied_index + 1)
        before = self.revision
        results = super().apply(entries)
        revisions = self._checker.revisions
        if revisions is not None:
            revisions.applied(self._node_id, entries[-1].index, before, self.revision,
                              self.compact_revision, self.stored)
        return results

    def restore(self, chunks):
        super().restore(chunks)
        self._checker.installed(self._node_id, self.storage.applied_index())


class SimNode:
    def __init__(self, cluster, node_id):
        self.cluster = cluster
        self.node_id = node_id
        self.wipe()
        self.server = None
        self.replica = None
        self.transport = None
        # Requests this node forwarded to the leader, over its lives.
        self.forwarded_before = 0
        self.up = False
        self.tick_interval = 10
        self._tick_handle = None
        self._process_handle = None
        self._crash_countdown = None
        self.incarnation = 0
        # While paused (a GC pause, a stalled VM) the node's inputs queue up
        # here and run when it resumes; its clock does not advance.
        self.paused = False
        self._held = []
        # Membership (`geocachedb.testing.membership`): the voters a node
        # boots with (none for a node that joins a running cluster), and
        # whether the operator runs it at all (a spare not yet added, or a
        # node decommissioned after its removal, is out of service).
        self.boot_voters = []
        # Crashes that lost applied writes still in memory (write-behind).
        self.unflushed_lost = 0
        self.in_service = True
        self.decommissioned_at = 0

    def wipe(self):
        """A new machine under this id: empty disk, storage, spool."""
        cluster = self.cluster
        self.disk = SimDisk(self.node_id, observer=cluster.checker)
        self.storage = MemoryStorage()
        self.state_machine = self._new_state_machine()
        self.snapshot_store = MemorySnapshotStore()
        cluster.checker.wiped(self.node_id)

    def _new_state_machine(self):
        cluster = self.cluster
        return RecordingStateMachine(self.storage, self.node_id, cluster.checker,
                                     write_behind=cluster.config.write_behind)

    # -- life cycle

    def start(self):
        cluster = self.cluster
        self.incarnation += 1
        self._crash_countdown = None
        log = self.disk.open(before_sync=self._io_point)
        self.transport = cluster.network.transport(self.node_id, before_send=self._io_point)
        rng = cluster.scheduler.derive_rng()
        self.up = True
        try:
            self.server = Server(
                self.node_id,
                list(self.boot_voters),
                log,
                self.transport,
                self.state_machine,
                rng,
                cluster.raft_config(),
                schedule=self.schedule_process,
                ticks_per_second=cluster.config.ticks_per_second,
                snapshot_store=self.snapshot_store,
                auto_compact_revisions=cluster.config.auto_compact_revisions,
            )
            self.replica = self.server.replica
        except SimulatedCrash:
            self._crashed()
            return
        self._schedule_tick()
        self.schedule_process()

    def crash(self):
        """Power off now (between two events)."""
        if self.up:
            self._crashed()

    def pause(self):
        """Stop the process without killing it: ticks stop, inputs queue."""
        if self.up:
            self.paused = True

    def resume(self):
        """Wake up: what queued up during the pause is handled over the next
        few moments in an arbitrary order (a process waking up finds several
        sockets readable at once, and each reactor turn ends with a
        process()), and the clock ticks again."""
        if not self.paused:
            return
        self.paused = False
        held, self._held = self._held, []
        scheduler = self.cluster.scheduler
        scheduler.rng.shuffle(held)
        incarnation = self.incarnation
        for fn, args in held:
            scheduler.after(scheduler.rng.randint(0, 3), self._replay, incarnation, fn, args)
        self.schedule_process()
        if self._tick_handle is None:
            self._schedule_tick()

    def _replay(self, incarnation, fn, args):
        if self.up and self.incarnation == incarnation:
            if self._call(fn, *args):
                self.schedule_process()

    def arm_crash(self, after_ios):
        """Crash at the ``after_ios``-th next sync or send (1 = the next)."""
        if self.up:
            self._crash_countdown = max(1, after_ios)

    def _io_point(self):
        if self._crash_countdown is not None:
            self._crash_countdown -= 1
            if self._crash_countdown <= 0:
                self._crash_countdown = None
                raise SimulatedCrash("armed crash at an I/O point")

    def _crashed(self):
        cluster = self.cluster
        self.up = False
        self.paused = False
        self._held = []
        if self.server is not None:
            self.forwarded_before += self.server.forwarding.writes_forwarded
            self.forwarded_before += self.server.forwarding.requests_forwarded
        self.server = None
        self.replica = None
        if self.transport is not None:
            self.transport.closed = True
        cluster.scheduler.cancel(self._tick_handle)
        cluster.scheduler.cancel(self._process_handle)
        self._tick_handle = self._process_handle = None
        self.disk.crash(cluster.scheduler.rng, cluster.config.torn_write_probability)
        self.snapshot_store.crash()
        if cluster.config.write_behind:
            # The applied writes not yet flushed were only in memory.
            if self.state_machine.applied_index > self.storage.applied_index():
                self.unflushed_lost += 1
            self.state_machine = self._new_state_machine()
        cluster.checker.forget(self.node_id)
        cluster.node_crashed(self.node_id)

    # -- driving the replica

    def _call(self, fn, *args):
        """Call into the replica; a `SimulatedCrash` raised by an I/O hook
        anywhere inside crashes the node.  Returns False if it crashed."""
        if self.paused:
            self._held.append((fn, args))
            return False
        try:
            fn(*args)
        except SimulatedCrash:
            self._crashed()
            return False
        return True

    def _schedule_tick(self):
        cluster = self.cluster
        jitter = cluster.scheduler.rng.randint(0, max(1, self.tick_interval // 10))
        self._tick_handle = cluster.scheduler.after(self.tick_interval + jitter, self._tick)

    def _tick(self):
        self._tick_handle = None
        if not self.up or self.paused:
            return  # `resume` restarts the ticks
        if self._call(self.server.tick):
            self._schedule_tick()

    def schedule_process(self):
        if self.up and self._process_handle is None:
            delay = self.cluster.scheduler.rng.randint(0, self.cluster.config.max_process_delay)
            self._process_handle = self.cluster.scheduler.after(delay, self._process)

    def _process(self):
        self._process_handle = None
        if not self.up or self.paused:
            return  # `resume` schedules it again
        if self._call(self.server.process):
            self.cluster.observe(self)

    @property
    def forwarded(self):
        """Requests (writes included) this node sent to a leader."""
        total = self.forwarded_before
        if self.server is not None:
            total += self.server.forwarding.writes_forwarded + self.server.forwarding.requests_forwarded
        return total

    def receive(self, message):
        """A Raft message or a `Parcel` from a peer."""
        if not self.up:
            return
        if isinstance(message, Parcel):
            self._call(self._parcel, message)
        else:
            self._call(self.server.receive, message)

    def _parcel(self, parcel):
        server = self.server
        self.schedule_process()
        if parcel.kind == "proposals":
            server.proposals_received(parcel.payload)
        elif parcel.kind == "forward":
            forward_id, data = parcel.payload
            server.forward_received(parcel.frm, forward_id, pb.Request.FromString(data))
        else:
            forward_id, data = parcel.payload
            server.forward_answered(forward_id, pb.Response.FromString(data))

    def handle(self, request, respond):
        """A client's request, as the client protocol hands it over.
        False when the node is down (the connection is refused)."""
        if not self.up:
            return False
        if self._call(self.server.handle, request, respond):
            self.schedule_process()
        return True

    def peer_lost(self, peer_id):
        if self.up and not self.paused:
            self._call(self.server.peer_lost, peer_id)

    def call(self, method, *args):
        """Call ``server.<method>(*args)`` like the admin shell would
        (operator commands without a request: compaction)."""
        if self.up and self._call(getattr(self.server, method), *args):
            self.schedule_process()
            return True
        return False


def member_request(action, node_id, address="", learner=False):
    """The `member` request the admin shell and the CLI send."""
    request = pb.Request()
    m = request.member
    m.action = action
    m.node_id = node_id
    m.address = address
    m.learner = learner
    return request


def request_error(response):
    """The `GeoCacheError` a response carries, or None."""
    if response.HasField("error") and response.error.code != pb.OK:
        return errors.from_pb(response.error)
    return None


class ClusterConfig:
    """Knobs of the simulated machines (faults are in `faults.NemesisConfig`).

    With ``randomize_raft`` each seed draws its own Raft tunables (batch
    size, pipelining window, heartbeat and election timeouts, pre-vote and
    check-quorum on or off, how often the log is compacted and the size of
    snapshot chunks): every configuration a user may choose must be safe,
    and small batches, windows and logs exercise the flow-control and
    InstallSnapshot paths that the defaults hardly reach.
    """

    torn_write_probability = 0.5  # on crash, keep a random prefix of unsynced writes
    max_process_delay = 2  # virtual time between an input and process()
    tick_interval = 10
    tick_skew = 0.3  # each node's tick interval is within +-30% of the base
    election_ticks = 10
    heartbeat_ticks = 1
    randomize_raft = True
    # Up to this many nodes exist: the initial voters plus spares that the
    # membership operator may add (and removed nodes it may add back).
    max_nodes = 5
    # The state machine's write-behind (`KVStateMachine`): 0 writes every
    # applied batch to storage at once; N keeps up to N keys in memory, lost
    # in a crash, so the log must be replayed from storage's applied index
    # and never compacted past what storage holds (as on a real node).
    write_behind = 0
    # The leader's automatic compaction of key history (`server.compaction`):
    # revisions kept; small, so that it runs often within a run.
    auto_compact_revisions = 40
    # Raft options forced after the random draw (e.g. {"pre_vote": False}
    # to search a corner the draw reaches only now and then).
    raft_overrides = None
    # How the server's timeouts stated in seconds (a forwarded write's 10 s)
    # become ticks: few per second, so that they end within a run.
    ticks_per_second = 3

    def __init__(self, **options):
        for name, value in options.items():
            if not hasattr(ClusterConfig, name):
                raise TypeError("unknown ClusterConfig option %r" % (name,))
            setattr(self, name, value)


def draw_raft_options(rng, config):
    """The Raft tunables of one run."""
    options = {
        "election_ticks": config.election_ticks,
        "heartbeat_ticks": config.heartbeat_ticks,
    }
    if config.randomize_raft:
        heartbeat = rng.choice([1, 1, 2, 3])
        options.update(
            heartbeat_ticks=heartbeat,
            election_ticks=max(heartbeat + 1, rng.choice([5, 8, 10, 10, 15])),
            max_msg_bytes=rng.choice([1, 64, 512, 1 << 20]),
            max_inflight=rng.choice([1, 2, 4, 256]),
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
            # Compact often, so that lagging, restarted and joining nodes need
            # InstallSnapshot, streamed in small chunks, racing with crashes,
            # partitions and membership changes; sometimes never, so that
            # the plain log path stays covered.  (A snapshot holds the
            # history, so chunks of 64 bytes made a transfer outlast the
            # settling time.)
            snapshot_entries=rng.choice([0, 5, 10, 30, 100]),
            compaction_overhang=rng.choice([0, 3, 20]),
            snapshot_chunk_bytes=rng.choice([256, 1024, 4096, 256 * 1024]),
        )
    options.update(config.raft_overrides or {})
    return options


class SimCluster:
    def __init__(self, scheduler, network_factory, checker, size, config=None):
        self.scheduler = scheduler
        self.checker = checker
        self.config = config or ClusterConfig()
        self.node_ids = ["n%d" % (n + 1) for n in range(max(size, self.config.max_nodes))]
        self.initial = self.node_ids[:size]
        self.network = network_factory(self._deliver)
        self.nodes = {}
        self.crash_listeners = []
        self.problems = []  # (kind, message) the simulator itself noticed
        rng = scheduler.rng
        self.raft_options = draw_raft_options(rng, self.config)
        for node_id in self.node_ids:
            node = SimNode(self, node_id)
            skew = self.config.tick_skew
            node.tick_interval = max(
                1, int(round(self.config.tick_interval * (1 + rng.uniform(-skew, skew))))
            )
            self.nodes[node_id] = node
            if node_id in self.initial:
                node.boot_voters = list(self.initial)
            else:
                node.in_service = False  # a spare: not started until added

    def raft_config(self):
        return RaftConfig(**self.raft_options)

    def start(self):
        for node_id in self.initial:
            self.nodes[node_id].start()

    def client_targets(self):
        """The ids clients connect to: the nodes in service (what an
        operator lists in a client's configuration)."""
        return [n for n in self.node_ids if self.nodes[n].in_service] or self.node_ids

    def in_service(self):
        """The nodes the operator runs (crashed ones included)."""
        return [self.nodes[n] for n in self.node_ids if self.nodes[n].in_service]

    def node(self, node_id):
        return self.nodes.get(node_id)

    def up_nodes(self):
        return [self.nodes[n] for n in self.node_ids if self.nodes[n].up]

    def _deliver(self, node_id, message):
        node = self.nodes.get(node_id)
        if node is not None:
            node.receive(message)

    def node_crashed(self, node_id):
        # Its peers' connections to it break (what they forwarded there
        # will not be answered).
        for node in self.up_nodes():
            node.peer_lost(node_id)
        for listener in self.crash_listeners:
            listener(node_id)

    def observe(self, node):
        replica = node.replica
        self.checker.observe(
            node.node_id, replica.role, replica.term, replica.commit_index, node.disk.log
        )

    def report(self, kind, message):
        self.problems.append((kind, message))

    def leaders(self):
        return [n for n in self.up_nodes() if n.replica.role == "leader"]
