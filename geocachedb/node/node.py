"""The node: one server (`geocachedb.server.Server`) hosted on the Twisted
reactor.

This is the glue between the reactor-free server layer and the world.  The
node is a `MultiService`: it opens the storage backend and the durable Raft
log, starts the flush thread pool, builds the `Server`, and has as children
the `TimerService`s that tick the server's clock and flush applied writes to
storage, and the peer network (a `MultiService` of `ClientService`s).  It
runs the server's ``process()`` at most once per reactor turn: every request
that arrived in that turn shares one Ready, hence one log append, one fsync
and one storage transaction (group commit without timers).

Clients reach the server through the client protocol (`handle`); the admin
shell through `INodeControl`, whose operations are requests on the same path
(so a follower's shell forwards them to the leader); peers through the peer
network.
"""

import os
import random

from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet import threads
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from geocachedb import errors
from geocachedb.interfaces import INodeControl, IPeerTransport, IRaftLog
from geocachedb.node.loglevel import LEVELS, NodeLogLevel, StdlibToTwisted
from geocachedb.raft.types import RaftConfig
from geocachedb.server.metrics import GCPauses, NodeMetrics, fsync_summary
from geocachedb.server.server import Server
from geocachedb.snapshots import FileSnapshotStore
from geocachedb.statemachine import KVStateMachine
from geocachedb.storage import open_storage
from geocachedb.wire import geocache_pb2 as pb

# Applied writes reach the storage in one transaction at least this often
# (or sooner, once this many keys are pending): the Raft log's fsync is what
# acknowledges a write, so the storage's own fsync stays off the write path.
# The batch is committed on the flush thread.  Why once a second and not
# etcd's 100 ms: docs/PERFORMANCE.md ("write-behind").  The price: up to a
# second more of the log to apply again after a crash.
FLUSH_SECONDS = 1.0
WRITE_BEHIND_KEYS = 20000


@implementer(IPeerTransport)
class NoPeers:
    """The transport of a single-node cluster: there is nobody to talk to."""

    def send(self, message):
        pass

    def can_reach(self, peer_id):
        return False

    def send_proposals(self, leader_id, commands):
        return list(commands)

    def send_forward(self, peer_id, forward_id, request):
        return False

    def send_forward_response(self, peer_id, forward_id, response):
        pass

    def update_members(self, addresses, member_ids):
        pass

    def connected_peers(self):
        return set()

    def isolate(self, peer_ids):
        pass

    def heal(self):
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
        auto_compact_revisions=100000,
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
        self.auto_compact_revisions = auto_compact_revisions
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
class Node(service.MultiService):
    log = Logger()

    def __init__(self, config, reactor=None, transport_factory=None):
        service.MultiService.__init__(self)
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
        self.server = None
        self.replica = None
        self.storage = None
        self.raft_log = None
        self.state_machine = None
        self._scheduled = False
        self._started_at = None
        self._flush_pool = None
        self.log_level = NodeLogLevel()
        self._stdlib_log = StdlibToTwisted()
        for step, work in ((config.tick_seconds, self._tick), (FLUSH_SECONDS, self._flush)):
            timer = TimerService(step, work)
            timer.clock = reactor
            timer.setServiceParent(self)

    # ------------------------------------------------------------ lifecycle

    def startService(self):
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
            if service.IService.providedBy(self.transport):
                self.transport.setServiceParent(self)
        raft_config = RaftConfig(
            election_ticks=cfg.election_ticks,
            heartbeat_ticks=cfg.heartbeat_ticks,
            snapshot_entries=cfg.snapshot_entries,
        )
        addresses = dict(cfg.peers)
        addresses[cfg.node_id] = cfg.advertise or ""
        self._stdlib_log.install()
        self.server = Server(
            cfg.node_id,
            cfg.voters,
            self.raft_log,
            self.transport,
            self.state_machine,
            random.Random(),
            raft_config,
            schedule=self.schedule,
            ticks_per_second=1.0 / cfg.tick_seconds,
            # Incoming snapshots spool to disk: one finished before a crash
            # is installed at the next start.
            snapshot_store=FileSnapshotStore(os.path.join(cfg.data_dir, "snapshot")),
            addresses=addresses,
            max_value=cfg.max_value,
            metrics=self.metrics,
            cluster_name=cfg.cluster_id,
            auto_compact_revisions=cfg.auto_compact_revisions,
        )
        self.replica = self.server.replica
        self.handle = self.server.handle
        self.log_level.install()
        self.gc_pauses.install()
        self._started_at = self._reactor.seconds()
        self._flush_pool.start()
        if cfg.join and not self.replica.is_member:
            self._reactor.callLater(0, self._ask_to_join)
        self.log.info(
            "node {id} started: storage {storage} in {data}, {n} voter(s), applied index {applied}",
            id=cfg.node_id,
            storage=cfg.storage,
            data=cfg.data_dir,
            n=len(cfg.voters),
            applied=self.state_machine.applied_index,
        )
        service.MultiService.startService(self)

    def stopService(self):
        # The timers and the peer network first (their Deferreds awaited),
        # then what they used.
        d = maybeDeferred(service.MultiService.stopService, self)
        d.addBoth(self._close)
        return d

    def _close(self, passthrough):
        self.gc_pauses.uninstall()
        self.log_level.uninstall()
        if self.server is not None:
            self.server.close()
            self.state_machine.flush()
        if self._flush_pool is not None and self._flush_pool.started:
            self._flush_pool.stop()
        self._stdlib_log.uninstall()
        if self.raft_log is not None:
            self.raft_log.close()
        if self.storage is not None:
            self.storage.close()
        return passthrough

    def _in_flush_thread(self, work, done):
        d = threads.deferToThreadPool(self._reactor, self._flush_pool, work)
        d.addCallback(lambda _: done())
        d.addErrback(lambda f: self.log.failure("writing applied entries to storage failed", f))

    # --------------------------------------------------------------- driving

    def _tick(self):
        if self.server is not None:
            self.server.tick()

    def _flush(self):
        if self.state_machine is not None:
            self.state_machine.flush_in_background()

    def schedule(self):
        """Run the server's process() once, at the end of this reactor
        turn, however many inputs arrive before then."""
        if not self._scheduled:
            self._scheduled = True
            self._reactor.callLater(0, self._process)

    def _process(self):
        self._scheduled = False
        if self.server is not None:
            self.server.process()

    # ------------------------------------------------- INodeControl (admin)

    def _request(self, kind, convert, **fields):
        """Run a request through the same path as a client's (validation,
        forwarding to the leader, waiting for one, ReadIndex); a Deferred
        of its result."""
        from geocachedb.client.core import build_request, result_of

        d = Deferred()
        request = build_request(kind, **fields)

        def respond(response):
            if response.HasField("error") and response.error.code != pb.OK:
                d.errback(errors.from_pb(response.error))
            else:
                d.callback(convert(result_of(kind, response)))

        self.server.handle(request, respond)
        return d

    def get(self, key):
        return self._request("get", lambda value: value, key=key)

    def get_kv(self, key, revision=0):
        return self._request("get_kv", lambda kv: kv, key=key, revision=revision)

    def compact_history(self, revision):
        return self._request("compact", lambda _: None, revision=revision)

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
        connected = self.transport.connected_peers()
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
                "revision": self.state_machine.revision,
                "compact_revision": self.state_machine.compact_revision,
                "uptime": self._reactor.seconds() - (self._started_at or self._reactor.seconds()),
                "peers": peers,
            }
        )
        return s

    def members(self):
        return self.server.membership.members()

    # ------------------------------------------------ membership, leadership
    # Requests like a client's, so that a follower forwards them to the
    # leader (`geocachedb.server.membership`).

    def _membership(self, action, node_id="", address="", learner=False):
        return self._request("member", list, action=action, node_id=node_id,
                             address=address, learner=learner)

    def add_member(self, node_id, address, learner=False):
        return self._membership("add", node_id, address, learner)

    def promote(self, node_id):
        return self._membership("promote", node_id)

    def remove_member(self, node_id):
        return self._membership("remove", node_id)

    def transfer_leader(self, node_id):
        return self._membership("transfer", node_id)

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

    def snapshot(self):
        """Compact the log now as far as is safe (the admin ``snapshot``:
        the state machine is the snapshot); the new snapshot index or None."""
        return self.server.compact()

    def compact(self):
        """Drop every applied log entry that is safe to drop, keeping no
        overhang; the new first index minus one, or None."""
        return self.server.compact(keep=0)

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
