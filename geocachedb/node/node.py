"""The node: one Raft replica hosted on the Twisted reactor.

This is the glue between the pure parts and the world.  It owns the storage
backend, the durable Raft log and the `Replica` (the host loop shared with
the simulator), drives the replica's logical clock from a `LoopingCall`, and
runs the replica's ``process()`` at most once per reactor turn: every request
that arrived in that turn shares one Ready, hence one log append, one fsync
and one storage transaction (group commit without timers).

Clients reach it through `KVService` (``submit_write`` / ``read_barrier``);
the admin shell through `INodeControl`; peers through the peer network.
"""

import os
import random
from collections import deque

from twisted.application import service
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from geocachedb import errors
from geocachedb.interfaces import INodeControl, IPeerTransport, IRaftLog
from geocachedb.node.backups import Backups
from geocachedb.node.deadlines import SWEEP_SECONDS, pop_expired
from geocachedb.node.kvservice import check_command
from geocachedb.node.loglevel import LEVELS, NodeLogLevel
from geocachedb.node.metrics import GCPauses, NodeMetrics, fsync_summary
from geocachedb.raft.types import LEADER, RaftConfig
from geocachedb.snapshots import FileSnapshotStore
from geocachedb.statemachine import KVStateMachine
from geocachedb.wire.raft_codec import varint as _varint
from geocachedb.wire import geocache_pb2 as pb
from geocachedb.storage import open_storage

# Applied writes reach the storage in one transaction at least this often
# (or sooner, once this many keys are pending): the Raft log's fsync is what
# acknowledges a write, so the storage's own fsync stays off the write path.
# Once a second (etcd: every 100 ms).  Random keys dirty a B+tree leaf page
# each, and a batch of 8,000 keys costs LMDB less than half the CPU per key
# of a batch of 800 (bench/writebehind_bench.py).  The batch is committed on
# the flush thread; with the 1 ms GIL switch interval (`node.tuning`) the
# p99 latency stayed the same while server CPU per replicated write fell
# from 115-140 to 103-118 us at 64 in flight (A/B, 3 rounds, issue 8).  The
# price: up to a second more of the log to apply again after a crash.
FLUSH_SECONDS = 1.0
WRITE_BEHIND_KEYS = 20000

# A follower's client write sent to the leader fails with UNAVAILABLE when
# this node has not applied it within this many seconds.
SENT_WRITE_TIMEOUT = 10


def _ignore(result, error):
    pass


def _deadline(waiting):
    return waiting[0]  # `Node._sent_writes` values: (deadline, callback)


# Command.proposal_id (field 19, varint) as it is encoded on the wire.
_PROPOSAL_ID_TAG = bytes((19 << 3 | 0x80, 1))
_U64 = (1 << 64) - 1


# A learner added without --learner is promoted once caught up, or the add
# reports failure after this many seconds (it stays a learner).
PROMOTE_TIMEOUT = 120

# Requests that arrive while no leader is known wait this many election
# timeouts for one before failing with UNAVAILABLE.
LEADER_WAIT_ELECTIONS = 2
MAX_WAITING = 10000


@implementer(IPeerTransport)
class NoPeers:
    """The transport of a single-node cluster: there is nobody to talk to."""

    def send(self, message):
        pass


class NodeConfig:
    """Everything a node needs to start; built by `geocachedb.tap`."""

    def __init__(
        self,
        node_id,
        data_dir,
        listen="tcp:50051",
        peers=None,
        cluster_id="geocache",
        storage="lmdb",
        storage_options=None,
        tick_seconds=0.1,
        election_ticks=10,
        heartbeat_ticks=1,
        max_frame=4 * 1024 * 1024,
        max_value=1024 * 1024,
        fault_injection=False,
        advertise=None,
        snapshot_entries=10000,
        join=None,
        restore=None,
        wal_segment_bytes=64 * 1024 * 1024,
    ):
        self.node_id = node_id
        self.data_dir = data_dir
        self.listen = listen
        self.peers = dict(peers or {})
        self.cluster_id = cluster_id
        self.storage = storage
        self.storage_options = dict(storage_options or {})
        self.tick_seconds = tick_seconds
        self.election_ticks = election_ticks
        self.heartbeat_ticks = heartbeat_ticks
        self.max_frame = max_frame
        self.max_value = max_value
        self.fault_injection = fault_injection
        self.advertise = advertise
        self.snapshot_entries = snapshot_entries
        self.join = join
        self.restore = restore
        self.wal_segment_bytes = wal_segment_bytes

    @property
    def clustered(self):
        return bool(self.peers or self.join)

    @property
    def voters(self):
        if self.join:
            return []  # the configuration comes from the cluster it joins
        return sorted(set(self.peers) | {self.node_id})


def open_raft_log(path, segment_bytes=64 * 1024 * 1024):
    from geocachedb.wal import WriteAheadLog

    return WriteAheadLog(path, segment_bytes=segment_bytes)


@implementer(IRaftLog)
class CountingLog:
    """An IRaftLog that counts the batches appended to it (for `stats`)
    and otherwise passes every call through."""

    def __init__(self, log, metrics):
        self._log = log
        self._metrics = metrics

    def append(self, entries):
        self._metrics.observe_batch(len(entries))
        self._log.append(entries)

    def __getattr__(self, name):
        return getattr(self._log, name)


for _name in ("hard_state", "set_hard_state", "first_index", "last_index", "term", "entries",
              "sync", "compact", "reset", "stats", "close"):
    setattr(CountingLog, _name, (lambda n: lambda self, *a, **k: getattr(self._log, n)(*a, **k))(_name))
del _name


@implementer(INodeControl)
class Node(service.Service):
    log = Logger()

    def __init__(self, config, reactor=None, transport_factory=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.config = config
        self.node_id = config.node_id
        self.fault_injection_enabled = config.fault_injection
        self.metrics = NodeMetrics()
        self.gc_pauses = GCPauses()
        self._transport_factory = transport_factory
        self.transport = NoPeers()
        self.replica = None
        self.storage = None
        self.raft_log = None
        self._scheduled = False
        self._waiting = deque()  # (deadline, retry) while no leader is known
        # Client writes this follower sent to the leader (`propose_via`):
        # encoded Command (unique: it carries a proposal_id) -> (deadline,
        # callback), answered when the entry is applied here.  Insertion
        # order is deadline order (one timeout for all).
        self._sent_writes = {}
        self._next_sweep = 0.0
        # Unique per forwarded write: a random start, then counting.
        self._proposal_ids = random.getrandbits(64)
        self._started_at = None
        self._ticker = None
        self._flusher = None
        self._flush_pool = None
        self._send_proposals = None
        self.kv = None  # the KVService, set when it is created
        self._promotions = {}  # learner id -> deadline for its promotion
        self.backups = Backups(self._reactor.seconds)
        self._known_addresses = None
        self.log_level = NodeLogLevel()

    # ------------------------------------------------------------ lifecycle

    def startService(self):
        from geocachedb.replica import Replica

        cfg = self.config
        try:
            self.storage = open_storage(cfg.storage, os.path.join(cfg.data_dir, "kv"), **cfg.storage_options)
            self.raft_log = CountingLog(open_raft_log(os.path.join(cfg.data_dir, "raft"), cfg.wal_segment_bytes), self.metrics)
        except Exception as e:
            # A locked, corrupt or unreadable data directory: one line, exit.
            raise SystemExit("geocache: cannot open the data in %s: %s" % (cfg.data_dir, e)) from None
        # One thread writes the write-behind batches (`KVStateMachine`), so
        # the reactor keeps serving while the storage commits.
        self._flush_pool = ThreadPool(minthreads=1, maxthreads=1, name="geocache-flush")
        self.state_machine = KVStateMachine(self.storage, write_behind=WRITE_BEHIND_KEYS,
                                            background=self._in_flush_thread)
        if cfg.restore:
            self._restore(cfg.restore)
        if self._transport_factory is not None:
            self.transport = self._transport_factory(self)
        # Once per reactor turn: looked up once (a single node has none).
        self._send_proposals = getattr(self.transport, "send_proposals", None)
        raft_config = RaftConfig(
            election_ticks=cfg.election_ticks,
            heartbeat_ticks=cfg.heartbeat_ticks,
            snapshot_entries=cfg.snapshot_entries,
        )
        addresses = dict(cfg.peers)
        addresses[cfg.node_id] = cfg.advertise or ""
        self.replica = Replica(
            cfg.node_id,
            cfg.voters,
            self.raft_log,
            self.transport,
            self.state_machine,
            random.Random(),
            raft_config,
            # Incoming snapshots spool to disk: one finished before a crash
            # is installed at the next start.
            snapshot_store=FileSnapshotStore(os.path.join(cfg.data_dir, "snapshot")),
            addresses=addresses,
        )
        self.replica.on_apply = self._answer_sent_writes
        self.log_level.install()
        self.gc_pauses.install()
        self._started_at = self._reactor.seconds()
        if cfg.join and not self.replica.is_member:
            self._reactor.callLater(0, self._ask_to_join)
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self._reactor
        self._ticker.start(cfg.tick_seconds, now=True)
        self._flusher = LoopingCall(self.state_machine.flush_in_background)
        self._flusher.clock = self._reactor
        self._flush_pool.start()
        self._flusher.start(FLUSH_SECONDS, now=False)
        self.log.info(
            "node {id} started: storage {storage} in {data}, {n} voter(s), applied index {applied}",
            id=cfg.node_id,
            storage=cfg.storage,
            data=cfg.data_dir,
            n=len(cfg.voters),
            applied=self.state_machine.applied_index,
        )
        service.Service.startService(self)

    def stopService(self):
        service.Service.stopService(self)
        self.gc_pauses.uninstall()
        self.log_level.uninstall()
        self.backups.close_all()
        if self._flusher is not None and self._flusher.running:
            self._flusher.stop()
        if self.replica is not None:
            self.replica.close()
            self.state_machine.flush()
        if self._flush_pool is not None and self._flush_pool.started:
            self._flush_pool.stop()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        for _, retry in self._waiting:
            retry(expired=True)
        self._waiting.clear()
        sent, self._sent_writes = self._sent_writes, {}
        for _, callback in sent.values():
            callback(None, errors.Unavailable("node is shutting down; the write's outcome is unknown"))
        stop = getattr(self.transport, "stop", None)
        if stop is not None:
            stop()
        if self.raft_log is not None:
            self.raft_log.close()
        if self.storage is not None:
            self.storage.close()

    def _in_flush_thread(self, work, done):
        d = threads.deferToThreadPool(self._reactor, self._flush_pool, work)
        d.addCallback(lambda _: done())
        d.addErrback(lambda f: self.log.failure("writing applied entries to storage failed", f))

    # --------------------------------------------------------------- driving

    def _tick(self):
        self.replica.tick()
        self._expire_waiting()
        if self._sent_writes and self._reactor.seconds() >= self._next_sweep:
            self._expire_sent_writes()
        self._check_promotions()
        self.backups.expire()
        self.schedule()

    def schedule(self):
        """Run the replica's process() once, at the end of this reactor
        turn, however many inputs arrive before then."""
        if not self._scheduled:
            self._scheduled = True
            self._reactor.callLater(0, self._process)

    def _process(self):
        self._scheduled = False
        if self.replica is None:
            return
        self.replica.process()
        if self._send_proposals is not None:
            self._send_proposals()
        if self._waiting and self.replica.leader_id is not None:
            self._retry_waiting()
        addresses = self.replica.addresses()
        if addresses != self._known_addresses:
            self._known_addresses = addresses
            update = getattr(self.transport, "update_members", None)
            if update is not None:
                update(addresses, [m for m, _ in self.replica.members()])

    def receive(self, message):
        """A Raft message from the peer network."""
        self.replica.receive(message)
        self.schedule()

    # -------------------------------------------------- the replicated path

    def _wait_for_leader(self, retry, callback):
        if len(self._waiting) >= MAX_WAITING:
            callback(None, errors.Unavailable("no leader, and too many requests are waiting for one"))
            return
        wait = self.config.tick_seconds * self.config.election_ticks * LEADER_WAIT_ELECTIONS
        self._waiting.append((self._reactor.seconds() + wait, retry))

    def _expire_waiting(self):
        now = self._reactor.seconds()
        while self._waiting and self._waiting[0][0] <= now:
            _, retry = self._waiting.popleft()
            retry(expired=True)

    def _retry_waiting(self):
        waiting, self._waiting = self._waiting, deque()
        for _, retry in waiting:
            retry(expired=False)

    def _leader_aware(self, start, callback):
        """Run ``start(on_done)`` against the replica.  While no leader is
        known the request waits (bounded) for an election instead of failing
        at once; a NOT_LEADER error gets the leader's client address."""

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
                self._leader_aware(start, callback)

        start(on_done)
        self.schedule()

    def leader_elsewhere(self):
        """The leader's id when another node leads and this one knows it
        (a write received here is better forwarded at once), else None."""
        replica = self.replica
        leader = replica.leader_id
        if leader is None or leader == self.node_id:
            return None
        return leader

    def propose_via(self, leader_id, data, callback):
        """A follower's client write: send ``data`` (an encoded Command) to
        the leader ``leader_id`` to propose, and ``callback(result, error)``
        when this node applies the entry — the same result a local proposal
        gets, without a reply from the leader (etcd's followers forward
        MsgProp the same way).  `Unavailable` when it is not applied within
        `SENT_WRITE_TIMEOUT` (the leader may have lost it, or may yet commit
        it: with a client id, a retry is applied at most once).  Returns
        False when the leader cannot be reached from here."""
        transport = self.transport
        can_reach = getattr(transport, "can_reach", None)
        if can_reach is None or not can_reach(leader_id):
            return False
        # A unique proposal_id, appended as an encoded field (protobuf merges
        # concatenated messages): without it an identical write from
        # another client, committed earlier and applied here late, could
        # answer this one although this one was lost.
        self._proposal_ids += 1
        data += _PROPOSAL_ID_TAG + _varint(self._proposal_ids & _U64)
        deadline = self._reactor.seconds() + SENT_WRITE_TIMEOUT
        self._sent_writes[data] = (deadline, callback)
        transport.queue_proposal(leader_id, data)
        self.schedule()
        return True

    def propose_forwarded(self, commands):
        """The leader's side of `propose_via`: propose each command a
        follower sent.  A command that is not a valid client write is
        dropped (and counted): it would be applied on every node.  Nothing
        is answered; a follower that is no longer talking to the leader
        times its writes out."""
        replica = self.replica
        max_value = self.config.max_value
        for data in commands:
            try:
                check_command(data, max_value)
            except Exception:
                self.metrics.count_error("DROPPED_PROPOSAL")
                continue
            replica.propose(data, _ignore)
        self.schedule()

    def unsent_writes(self, commands, why):
        """The peer network could not send these `propose_via` commands:
        they were never proposed, so their clients hear so at once."""
        sent = self._sent_writes
        for data in commands:
            waiting = sent.pop(data, None)
            if waiting is not None:
                waiting[1](None, errors.Unavailable(why))

    def _answer_sent_writes(self, entries, results):
        sent = self._sent_writes
        if not sent:
            return
        for entry, result in zip(entries, results):
            waiting = sent.pop(entry.data, None)
            if waiting is None:
                continue
            try:
                waiting[1](result, None)
            except Exception:
                self.log.failure("answering a forwarded write failed")

    def _expire_sent_writes(self):
        now = self._reactor.seconds()
        self._next_sweep = now + SWEEP_SECONDS
        for _, (_, callback) in pop_expired(self._sent_writes, now, _deadline):
            callback(None, errors.Unavailable(
                "the leader did not commit the write within %d s; its outcome is unknown" % SENT_WRITE_TIMEOUT))

    def submit_write(self, data, callback):
        """Replicate ``data`` (an encoded Command); ``callback(result,
        error)`` once it is applied here, or with the error (NOT_LEADER on a
        follower: the caller may forward the request to the leader)."""
        replica = self.replica
        if replica.core.role == LEADER:
            # The common case, once per write: no waiting for an election
            # can be needed, so none of `_leader_aware`'s closures.
            replica.propose(data, callback)
            self.schedule()
            return
        self._leader_aware(lambda done: replica.propose(data, done), callback)

    def read_barrier(self, callback):
        """``callback(None, None)`` once a linearizable read may be served
        from the local state machine."""
        self._leader_aware(self.replica.read_barrier, callback)

    def address_of(self, node_id):
        if node_id == self.node_id:
            return self.config.advertise or ""
        return self.config.peers.get(node_id, "")

    # ------------------------------------------------- INodeControl (admin)

    def _request(self, kind, convert, **fields):
        """Run a request through the same path as a client's (validation,
        forwarding to the leader, ReadIndex); a Deferred of its result."""
        from geocachedb.client.core import build_request, result_of

        d = Deferred()
        request = build_request(kind, **fields)

        def respond(response):
            if response.HasField("error") and response.error.code != pb.OK:
                d.errback(errors.from_pb(response.error))
            else:
                d.callback(convert(result_of(kind, response)))

        self.kv.handle(request, respond)
        return d

    def get(self, key):
        return self._request("get", lambda value: value, key=key)

    def put(self, key, value):
        return self._request("put", lambda _: self.replica.applied_index, key=key, value=value)

    def delete(self, key):
        return self._request("delete", bool, key=key)

    def scan(self, prefix, limit):
        return self._request("range", lambda result: result[0], prefix=prefix or b"", limit=limit or 0)

    def status(self):
        s = dict(self.replica.status())
        storage_stats = self.storage.stats()
        peers = []
        peer_status = s.get("peers", {})
        connected = getattr(self.transport, "connected_peers", lambda: set())()
        addresses = self.replica.addresses()
        member_ids = [m for m, _ in self.replica.members()] or sorted(self.config.peers)
        for peer_id in sorted(set(member_ids) - {self.node_id}):
            p = peer_status.get(peer_id, {})
            ticks = p.get("last_contact_ticks")
            peers.append(
                {
                    "id": peer_id,
                    "address": addresses.get(peer_id) or self.config.peers.get(peer_id, ""),
                    "connected": peer_id in connected,
                    "match_index": p.get("match_index"),
                    "last_contact": None if ticks is None else ticks * self.config.tick_seconds,
                }
            )
        s.update(
            {
                "id": self.node_id,
                "storage": self.config.storage,
                "storage_bytes": storage_stats.get("bytes_on_disk", 0),
                "uptime": self._reactor.seconds() - (self._started_at or self._reactor.seconds()),
                "peers": peers,
            }
        )
        return s

    def members(self):
        leader = self.replica.leader_id
        addresses = self.replica.addresses()
        out = []
        for node_id, role in self.replica.members():
            if node_id == self.node_id:
                address = self.config.advertise or addresses.get(node_id, "")
            else:
                address = addresses.get(node_id) or self.config.peers.get(node_id, "")
            out.append(
                {
                    "id": node_id,
                    "address": address,
                    "role": role,
                    "is_leader": node_id == leader,
                    "is_self": node_id == self.node_id,
                }
            )
        return out

    # ------------------------------------------------ membership, leadership

    def change_membership(self, action, node_id, address, learner, callback):
        """Run a membership action on the leader; ``callback(members,
        error)``.  ``add`` without ``learner`` adds a learner (answered at
        once) and this leader promotes it to voter once it has caught up, so
        a new node never holds up the cluster's commits while it copies the
        log.  If leadership moves first, `promote` does it by hand."""
        if action == "list":
            callback(self.members(), None)
            return

        def done(result, error):
            callback(None if error is not None else self.members(), error)

        # Idempotent on the leader, so that a client's retry of an add or a
        # remove that already happened succeeds instead of failing.
        current = dict(self.replica.members())
        if self.replica.role == "leader" and (
            (action == "remove" and node_id not in current)
            or (action == "add" and node_id in current)
        ):
            callback(self.members(), None)
            return
        if action == "transfer":
            start = lambda cb: self.replica.transfer_leadership(node_id, cb)  # noqa: E731
        elif action in ("add", "promote", "remove"):
            kind = {"add": "add_learner", "promote": "promote", "remove": "remove"}[action]
            if action == "add" and not learner:
                done = self._promote_when_caught_up(node_id, done)

            def start(cb, kind=kind):
                self.replica.propose_conf_change(kind, node_id, cb, address=address or None)
        else:
            callback(None, errors.InvalidArgument("unknown member action %r" % action))
            return
        self._leader_aware(start, done)

    def _restore(self, path):
        """--restore FILE: a new one-voter cluster from a backup (others then
        join).  A corrupt backup or a non-empty data directory stops the
        node with one line; nothing is changed then."""
        from geocachedb.snapshots import restore_as_new_cluster

        def chunks():
            with open(path, "rb") as f:
                while True:
                    chunk = f.read(256 * 1024)
                    if not chunk:
                        return
                    yield chunk

        if self.raft_log.last_index() != 0 or self.raft_log.hard_state().term != 0:
            self.log.info("data directory already initialised; --restore {path} ignored", path=path)
            return
        try:
            index = restore_as_new_cluster(
                self.state_machine, self.raft_log, self.node_id, chunks(), self.config.advertise
            )
        except (OSError, ValueError) as e:
            self.raft_log.close()
            self.storage.close()
            raise SystemExit("geocache: cannot restore from %s: %s" % (path, e)) from None
        self.log.info("restored {path} (applied index {index}) as a new one-node cluster", path=path, index=index)

    def _ask_to_join(self, attempt=1):
        """--join: ask the cluster (through any node) to add this node; it
        joins as a learner and the leader promotes it once caught up."""
        from geocachedb.client.twisted_client import TwistedClient

        if not self.running or self.replica.is_member:
            return
        client = TwistedClient([self.config.join], reactor=self._reactor, timeout=10)
        d = client.add_member(self.node_id, self.config.advertise)

        def joined(members):
            self.log.info("asked {join} to add us: members now {ids}", join=self.config.join,
                          ids=", ".join(m["id"] for m in members))

        def failed(failure):
            self.log.warn("joining through {join} failed (attempt {n}): {why}; retrying",
                          join=self.config.join, n=attempt, why=failure.getErrorMessage())
            self._reactor.callLater(min(10, attempt), self._ask_to_join, attempt + 1)

        d.addCallbacks(joined, failed)
        d.addBoth(lambda _: client.close())

    def _promote_when_caught_up(self, node_id, done):
        def added(result, error):
            if error is None:
                self._promotions[node_id] = self._reactor.seconds() + PROMOTE_TIMEOUT
            done(result, error)

        return added

    def _check_promotions(self):
        if not self._promotions or self.replica.role != "leader":
            return
        peers = self.replica.status().get("peers", {})
        commit = self.replica.commit_index
        now = self._reactor.seconds()
        for node_id, deadline in list(self._promotions.items()):
            match = (peers.get(node_id) or {}).get("match_index") or 0
            if match >= commit:
                del self._promotions[node_id]
                self.log.info("learner {id} caught up (index {match}); promoting it", id=node_id, match=match)
                self.change_membership("promote", node_id, "", False, self._promoted(node_id))
            elif now > deadline:
                del self._promotions[node_id]
                self.log.warn(
                    "learner {id} did not catch up within {s}s; it stays a learner "
                    "(promote it by hand once it has)", id=node_id, s=PROMOTE_TIMEOUT)

    def _promoted(self, node_id):
        def done(members, error):
            if error is not None:
                self.log.warn("promoting {id} failed: {error}", id=node_id, error=error)
            else:
                self.log.info("{id} is now a voter", id=node_id)

        return done

    def _deferred_membership(self, action, node_id="", address="", learner=False):
        d = Deferred()
        self.change_membership(
            action, node_id, address, learner,
            lambda members, error: d.errback(error) if error is not None else d.callback(members),
        )
        return d

    def add_member(self, node_id, address, learner=False):
        return self._deferred_membership("add", node_id, address, learner)

    def promote(self, node_id):
        return self._deferred_membership("promote", node_id)

    def remove_member(self, node_id):
        return self._deferred_membership("remove", node_id)

    def transfer_leader(self, node_id):
        return self._deferred_membership("transfer", node_id)

    def snapshot(self):
        """Compact the log now as far as is safe (the admin ``snapshot``:
        the state machine is the snapshot); the new snapshot index or None."""
        return self.replica.compact()

    def compact(self):
        """Drop every applied log entry that is safe to drop, keeping no
        overhang; the new first index minus one, or None."""
        return self.replica.compact(keep=0)

    def stats(self):
        log_stats = self.raft_log.stats()
        return {
            "requests": dict(self.metrics.requests),
            "errors": dict(self.metrics.errors),
            "latency_ms": self.metrics.latency_ms(),
            "batch_sizes": self.metrics.batch_sizes(),
            "fsyncs": log_stats.get("fsyncs", log_stats.get("syncs", 0)),
            "fsync time (ms)": fsync_summary(log_stats),
            "gc pauses": self.gc_pauses.summary(),
        }

    def set_log_level(self, level):
        if level.lower() not in LEVELS:
            raise ValueError("unknown log level %r (choose from debug, info, warn, error)" % level)
        # Logged before the change, at warn, so it is on record at any level.
        self.log.warn("log level set to {new_level}", new_level=level)
        self.log_level.set(level)

    def isolate(self, peer_ids):
        if not self.fault_injection_enabled:
            raise RuntimeError("fault injection is off; start the node with --enable-fault-injection")
        unknown = [p for p in peer_ids if p not in self.config.peers]
        if unknown:
            raise KeyError("unknown peer(s): %s" % ", ".join(unknown))
        self.transport.isolate(peer_ids)

    def heal(self):
        if not self.fault_injection_enabled:
            raise RuntimeError("fault injection is off; start the node with --enable-fault-injection")
        self.transport.heal()
