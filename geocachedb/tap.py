"""``twistd geocache``: command-line options and the service tree of a node.

`Options` parses and checks the command line; `makeService` builds a
`MultiService` of the node (storage, Raft log, replica, peers), its
listening port (clients and peers share it) and the admin shell.  Nothing
here does I/O beyond checking that the data directory is usable, so tests can
parse options and build the tree without a running reactor.
"""

import os

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage

from geocachedb import storage
from geocachedb.limits import MAX_FRAME_SIZE, MAX_VALUE_SIZE
from geocachedb.net import format_address, parse_address

log = Logger()

DEFAULT_LISTEN = "tcp:50051"
DEFAULT_ADMIN = "tcp:6051:interface=127.0.0.1"


def parse_peers(text):
    """``node2=127.0.0.1:50052,node3=127.0.0.1:50053`` (or the Go seed's
    ``node2:localhost:50052``) -> {"node2": "127.0.0.1:50052", ...}."""
    peers = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        if "=" in item:
            node_id, _, addr = item.partition("=")
        else:
            node_id, sep, addr = item.partition(":")
            if not sep:
                raise usage.UsageError("--peers: %r is not ID=HOST:PORT" % item)
        try:
            host, port = parse_address(addr)
        except ValueError:
            host = None
        if not node_id or host is None:
            raise usage.UsageError("--peers: %r is not ID=HOST:PORT" % item)
        if node_id in peers:
            raise usage.UsageError("--peers: %s is listed twice" % node_id)
        peers[node_id] = format_address(host, port)
    return peers


def _positive_int(name, allow_zero=False):
    def convert(value):
        try:
            number = int(value)
        except ValueError:
            raise usage.UsageError("%s must be a whole number, not %r" % (name, value)) from None
        if number < 0 or (number == 0 and not allow_zero):
            raise usage.UsageError("%s must be %s" % (name, "0 or more" if allow_zero else "positive"))
        return number

    return convert


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run one geocachedb node.  With no --peers the node is a single-node "
        "cluster.  Clients and peers connect to --listen; operators reach the "
        "admin shell with telnet on --admin."
    )
    optParameters = [
        ["id", None, "node1", "This node's id, unique in the cluster."],
        ["listen", None, DEFAULT_LISTEN, "Endpoint for clients and peers (Twisted endpoint string)."],
        ["advertise", None, None, "HOST:PORT clients should use to reach this node (default 127.0.0.1 and the --listen port)."],
        ["peers", None, "", "The other voters: ID=HOST:PORT,... (ID:HOST:PORT accepted too). Empty: a single-node cluster."],
        ["cluster-id", None, "geocache", "Cluster name; peers from another cluster are refused."],
        ["restore", None, None, "Start a new one-node cluster from this backup file (geocache-cli backup); needs an empty --data."],
        ["join", None, None, "HOST:PORT of a node of a running cluster to join (this node starts empty and is added as a learner, then promoted)."],
        ["storage", None, storage.DEFAULT, "Storage backend: %s." % ", ".join(sorted(storage.BACKENDS))],
        ["data", None, None, "Data directory (default ./data/ID)."],
        ["lmdb-map-size", None, 1024, "Initial LMDB map size in MiB (it grows when full).", _positive_int("--lmdb-map-size")],
        ["admin", None, DEFAULT_ADMIN, "Endpoint of the telnet admin shell ('none' to disable). Loopback only by default."],
        ["admin-password-file", None, None, "File holding the admin password (default: generated into DATA/admin.password)."],
        ["max-frame", None, MAX_FRAME_SIZE, "Largest frame accepted or sent, in bytes.", _positive_int("--max-frame")],
        ["max-value", None, MAX_VALUE_SIZE, "Largest value accepted, in bytes.", _positive_int("--max-value")],
        ["heartbeat-interval", None, 100, "Leader heartbeat interval in ms (one Raft tick).", _positive_int("--heartbeat-interval")],
        ["election-timeout", None, 1000, "Election timeout in ms; each node picks a random one in [T, 2T).", _positive_int("--election-timeout")],
        ["wal-segment-size", None, 64, "Size of one Raft log segment file in MiB (compaction deletes whole segments).", _positive_int("--wal-segment-size")],
        ["auto-compact-revisions", None, 100000, "Keep this many revisions of key history; the leader compacts older ones through Raft (0: never).", _positive_int("--auto-compact-revisions", allow_zero=True)],
        ["snapshot-entries", None, 10000, "Compact the Raft log once it holds this many applied entries (a follower further behind gets a snapshot).", _positive_int("--snapshot-entries")],
    ]
    optFlags = [
        ["enable-fault-injection", None, "Allow the admin shell's isolate/heal commands (tests only)."],
    ]

    def postOptions(self):
        if self["storage"] not in storage.BACKENDS:
            raise usage.UsageError(
                "--storage must be one of %s" % ", ".join(sorted(storage.BACKENDS))
            )
        self["peers"] = parse_peers(self["peers"])
        for name in ("advertise", "join"):
            if self[name]:
                try:
                    self[name] = format_address(*parse_address(self[name]))
                except ValueError as e:
                    raise usage.UsageError("--%s: %s" % (name, e)) from None
        if self["restore"] and (self["peers"] or self["join"]):
            raise usage.UsageError("--restore starts a new one-node cluster: no --peers or --join (others join it afterwards)")
        if self["restore"] and not os.path.isfile(self["restore"]):
            raise usage.UsageError("--restore: no such file: %s" % self["restore"])
        if self["join"] and self["peers"]:
            raise usage.UsageError("--join and --peers exclude each other: a joining node learns its peers from the cluster")
        if self["id"] in self["peers"]:
            raise usage.UsageError("--peers must not list this node's own id (%s)" % self["id"])
        if self["election-timeout"] < 2 * self["heartbeat-interval"]:
            raise usage.UsageError("--election-timeout must be at least twice --heartbeat-interval")
        if self["max-value"] + 1024 > self["max-frame"]:
            raise usage.UsageError("--max-frame must exceed --max-value by at least 1 KiB")
        if not self["data"]:
            self["data"] = os.path.join("data", self["id"])


def check_data_dir(path):
    """Create ``path`` if needed and prove it is writable, or exit with one
    line naming it."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise SystemExit("geocache: cannot use data directory %s: %s" % (path, e.strerror or e))


def advertised_address(options):
    if options["advertise"]:
        return options["advertise"]
    for part in options["listen"].split(":")[1:]:
        if part.isdigit():
            return "127.0.0.1:%s" % part
    return ""


def build_node_config(options):
    from geocachedb.node.node import NodeConfig

    heartbeat = options["heartbeat-interval"]
    storage_options = {}
    if options["storage"] == "lmdb":
        storage_options["map_size"] = options["lmdb-map-size"] * 1024 * 1024
        # The write-ahead log is what acknowledges a write; the state
        # machine's last batch may be replayed from it after an OS crash,
        # so LMDB's second (meta page) fsync per batch is not needed.
        storage_options["metasync"] = False
    return NodeConfig(
        node_id=options["id"],
        data_dir=options["data"],
        listen=options["listen"],
        peers=options["peers"],
        cluster_id=options["cluster-id"],
        storage=options["storage"],
        storage_options=storage_options,
        tick_seconds=heartbeat / 1000.0,
        election_ticks=max(2, options["election-timeout"] // heartbeat),
        heartbeat_ticks=1,
        max_frame=options["max-frame"],
        max_value=options["max-value"],
        fault_injection=options["enable-fault-injection"],
        advertise=advertised_address(options),
        snapshot_entries=options["snapshot-entries"],
        auto_compact_revisions=options["auto-compact-revisions"],
        join=options["join"],
        restore=options["restore"],
        wal_segment_bytes=options["wal-segment-size"] * 1024 * 1024,
    )


def makeService(options, reactor=None):
    from geocachedb.node.client_protocol import ClientConnection
    from geocachedb.node.tuning import InterpreterTuning
    from geocachedb.node.listener import ListeningService, PortFactory
    from geocachedb.node.node import Node
    from geocachedb.node.peers import make_peer_network

    check_data_dir(options["data"])
    config = build_node_config(options)
    top = service.MultiService()
    node = Node(config, reactor=reactor, transport_factory=make_peer_network if config.clustered else None)
    node.setServiceParent(top)
    factory = PortFactory(
        lambda: ClientConnection(node, config.max_frame),
        peer_factory=node_peer_factory(node) if config.clustered else None,
    )
    ListeningService(config.listen, factory, "clients and peers", reactor).setServiceParent(top)
    if options["admin"] and options["admin"].lower() != "none":
        add_admin_shell(top, node, options, reactor)
    # Last: it freezes what the others created while starting.
    InterpreterTuning().setServiceParent(top)
    return top


def node_peer_factory(node):
    """The factory for incoming peer connections; it needs the started
    node, so it is looked up lazily."""
    from geocachedb.node.peers import IncomingPeerFactory

    return IncomingPeerFactory(node)


def add_admin_shell(top, node, options, reactor):
    from geocachedb.admin import load_or_create_password, make_admin_factory
    from geocachedb.node.listener import ListeningService

    try:
        password, path = load_or_create_password(options["data"], options["admin-password-file"])
    except (OSError, ValueError) as e:
        raise SystemExit("geocache: admin password: %s" % e)
    log.info("admin shell on {endpoint}; password in {path}", endpoint=options["admin"], path=path)
    factory = make_admin_factory(node, password, reactor=reactor)
    ListeningService(options["admin"], factory, "the admin shell", reactor).setServiceParent(top)
