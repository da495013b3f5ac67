"""The peer network: Raft messages and forwarded client requests between
nodes, over the nodes' shared listening port.

Each node dials every other voter once (`twisted.application.internet.
ClientService`, reconnecting with exponential backoff) and sends its Raft
messages on that connection; what it receives arrives on the connections the
others dialed.  A connection starts with the preamble, then a `PeerHello`
naming the cluster id, the sender and the intended receiver; a hello from
another cluster, from an id that is not a member, or meant for another node
is refused with one log line and the connection is closed.

Nothing queues without bound: a connection registers as a push producer of
its transport, and while the kernel buffer is full at most
`MAX_PEER_BUFFER` more bytes are written; further Raft messages are dropped
(Raft retransmits) and forwarded requests fail with UNAVAILABLE.

Forwarding (`geocachedb.server.forwarding` decides; this carries): a
follower's client writes go to the leader as `Proposals` (encoded Commands,
batched per reactor turn), other requests it cannot serve as a `Forward`
whose `Response` comes back the same way.
"""

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import endpoints, protocol
from twisted.logger import Logger
from zope.interface import implementer

from geocachedb.client.core import parse_address
from geocachedb.interfaces import IPeerTransport
from geocachedb.node.listener import PEER_PREAMBLE, set_no_delay
from geocachedb.wire import geocache_pb2 as pb
from geocachedb.wire.framing import EnvelopeReceiver, FrameError
from geocachedb.wire.raft_codec import append_envelope, entry_field, message_from_pb, message_to_pb

MAX_PEER_BUFFER = 8 * 1024 * 1024
# Encoded entries kept for the next AppendEntries (`_encode_append`),
# bounded by count and bytes; past either bound the cache starts over (a
# follower that far behind gets its entries encoded again).
ENTRY_CACHE_SIZE = 8192
ENTRY_CACHE_BYTES = 16 * 1024 * 1024


class PeerConnection(EnvelopeReceiver):
    """One authenticated connection between two members (either side)."""

    envelope = pb.PeerMessage
    log = Logger()

    def __init__(self, network, expected_peer=None):
        self.network = network
        self.MAX_LENGTH = network.max_frame
        self.peer_id = None  # known after the hello
        self.expected_peer = expected_peer  # set when we dialed
        self.paused = False
        self._paused_bytes = 0

    # -------------------------------------------------------- connection

    def connectionMade(self):
        set_no_delay(self.transport)
        self.transport.registerProducer(self, True)
        if self.expected_peer is not None:
            self.transport.write(PEER_PREAMBLE)
            self._send_hello(self.expected_peer)

    def _send_hello(self, target):
        msg = pb.PeerMessage()
        msg.hello.cluster_id = self.network.cluster_id
        msg.hello.node_id = self.network.node_id
        msg.hello.target_id = target
        self.send_envelope(msg)

    def connectionLost(self, reason):
        if self.peer_id is not None:
            self.network.connection_lost(self)

    # IPushProducer: the transport tells us when its buffer is full.
    def pauseProducing(self):
        self.paused = True
        self._paused_bytes = 0

    def resumeProducing(self):
        self.paused = False

    def stopProducing(self):
        pass

    def try_send(self, message):
        """Send unless the bounded buffer is full; return whether sent."""
        return self.try_send_data(message.SerializeToString())

    def try_send_data(self, data):
        """`try_send` of an already encoded PeerMessage."""
        if len(data) > self.MAX_LENGTH:
            return False
        if self.paused:
            if self._paused_bytes + len(data) > MAX_PEER_BUFFER:
                return False
            self._paused_bytes += len(data) + 4
        self.sendString(data)
        return True

    # ----------------------------------------------------------- frames

    def frame_error(self, reason):
        self.network.count_drop("frame error")

    def refuse(self, why):
        self.log.warn(
            "refusing peer connection from {addr}: {why}", addr=self.peer_label(), why=why
        )
        msg = pb.PeerMessage()
        msg.error.code = pb.INVALID_ARGUMENT
        msg.error.message = why
        try:
            self.send_envelope(msg)
        except FrameError:
            pass
        self.transport.loseConnection()

    def envelope_received(self, msg):
        kind = msg.WhichOneof("body")
        if self.peer_id is None:
            if kind == "error":
                self.log.warn(
                    "peer {addr} refused us: {message}", addr=self.peer_label(), message=msg.error.message
                )
                self.transport.loseConnection()
                return
            if kind != "hello":
                return self.refuse("the first message must be a hello")
            return self._hello(msg.hello)
        if self.peer_id in self.network.isolated:
            return  # fault injection: the link is cut both ways
        if kind == "raft":
            self.network.raft_received(self, msg.raft)
        elif kind == "proposals":
            self.network.node.server.proposals_received(msg.proposals.commands)
        elif kind == "forward":
            self.network.forward_received(self, msg.forward)
        elif kind == "error":
            self.log.warn("peer {peer}: {message}", peer=self.peer_id, message=msg.error.message)

    def _hello(self, hello):
        net = self.network
        if hello.cluster_id != net.cluster_id:
            return self.refuse(
                "cluster id %r does not match ours (%r)" % (hello.cluster_id, net.cluster_id)
            )
        if hello.node_id not in net.peer_addresses and not net.accepts_strangers():
            return self.refuse("node id %r is not a member of this cluster" % hello.node_id)
        if hello.target_id != net.node_id:
            return self.refuse(
                "hello meant for %r reached %r" % (hello.target_id, net.node_id)
            )
        if self.expected_peer is not None and hello.node_id != self.expected_peer:
            return self.refuse(
                "dialed %s but %r answered" % (self.expected_peer, hello.node_id)
            )
        self.peer_id = hello.node_id
        if self.expected_peer is None:
            self._send_hello(hello.node_id)  # let the dialer check us too
        net.connection_made(self)


class _DialFactory(protocol.Factory):
    def __init__(self, network, peer_id):
        self.network = network
        self.peer_id = peer_id

    def buildProtocol(self, addr):
        return PeerConnection(self.network, expected_peer=self.peer_id)


class IncomingPeerFactory(protocol.Factory):
    """Builds the protocol for a connection that opened with the preamble."""

    def __init__(self, node):
        self.node = node

    def buildProtocol(self, addr):
        return PeerConnection(self.node.transport)


@implementer(IPeerTransport)
class PeerNetwork(service.MultiService):
    """The node's peer links: a `ClientService` child per member it dials
    (stopped, and awaited, with the network)."""

    log = Logger()

    def __init__(self, node, reactor):
        service.MultiService.__init__(self)
        self.node = node
        self.reactor = reactor
        self.node_id = node.node_id
        self.cluster_id = node.config.cluster_id
        self.peer_addresses = dict(node.config.peers)
        self.max_frame = node.config.max_frame
        self.outgoing = {}  # peer id -> PeerConnection we dialed (for sending)
        self.incoming = {}  # peer id -> PeerConnection it dialed (fallback for sending)
        self.members = set(self.peer_addresses) | {self.node_id}
        self.isolated = set()
        self.dropped = {}
        self._dialers = {}
        self._entry_cache = {}  # index -> (term, encoded field); see `_encode_append`
        self._entry_cache_bytes = 0
        for peer_id, address in sorted(self.peer_addresses.items()):
            self._dial(peer_id, address)

    def _dial(self, peer_id, address):
        try:
            host, port = parse_address(address)
        except ValueError:
            self.log.warn("peer {peer} has no usable address {address!r}", peer=peer_id, address=address)
            return
        policy = backoffPolicy(initialDelay=0.05, maxDelay=2.0, factor=2.0)
        endpoint = endpoints.HostnameEndpoint(self.reactor, host, port, timeout=2)
        dialer = ClientService(endpoint, _DialFactory(self, peer_id), retryPolicy=policy, clock=self.reactor)
        dialer.setServiceParent(self)  # started now if the network runs
        self._dialers[peer_id] = (dialer, address)

    def accepts_strangers(self):
        """A node that joins an existing cluster knows no members until the
        leader's log or snapshot reaches it: until then it accepts a hello
        from any node of its cluster id."""
        return self.members <= {self.node_id}

    def update_members(self, addresses, member_ids):
        """The configuration changed: dial new members, hang up on removed
        ones, and accept hellos from exactly the members."""
        self.members = set(member_ids) | {self.node_id}
        wanted = {}
        for peer_id in member_ids:
            if peer_id == self.node_id:
                continue
            address = addresses.get(peer_id) or self.peer_addresses.get(peer_id)
            if address:
                wanted[peer_id] = address
        for peer_id in sorted(set(self._dialers) - set(wanted)):
            dialer, _ = self._dialers.pop(peer_id)
            dialer.disownServiceParent()
            self.log.info("{peer} is no longer a member: not dialing it", peer=peer_id)
        for peer_id, address in sorted(wanted.items()):
            current = self._dialers.get(peer_id)
            if current is not None and current[1] == address:
                continue
            if current is not None:
                current[0].disownServiceParent()
            self.log.info("dialing member {peer} at {address}", peer=peer_id, address=address)
            self._dial(peer_id, address)
        self.peer_addresses = wanted

    def count_drop(self, why):
        self.dropped[why] = self.dropped.get(why, 0) + 1

    # --------------------------------------------------- IPeerTransport

    def send(self, message):
        conn = self._link(message.to)
        if conn is None:
            if message.to not in self.isolated:  # isolation drops silently
                self.count_drop("not connected")
            return
        if message.entries:
            data = self._encode_append(message)
        else:
            envelope = pb.PeerMessage()
            message_to_pb(message, envelope.raft)
            data = envelope.SerializeToString()
        if not conn.try_send_data(data):
            self.count_drop("send buffer full")

    def _encode_append(self, message):
        """An AppendEntries as PeerMessage bytes, each entry encoded once
        for every follower and message that carries it (tail batching sends
        followers different slices of the log, so whole messages rarely
        repeat).  The same (index, term) is the same entry (Raft's Log
        Matching property), so that is the cache key.  A RaftMessage's
        header and its entries are encoded apart and concatenated: protobuf
        parses concatenated encodings of a message as one message."""
        cache = self._entry_cache
        if len(cache) > ENTRY_CACHE_SIZE or self._entry_cache_bytes > ENTRY_CACHE_BYTES:
            cache.clear()
            self._entry_cache_bytes = 0
        parts = [message_to_pb(message, with_entries=False).SerializeToString()]
        add = parts.append
        for e in message.entries:
            hit = cache.get(e.index)
            if hit is None or hit[0] != e.term:
                if hit is not None:  # the same index in a later term
                    self._entry_cache_bytes -= len(hit[1])
                hit = cache[e.index] = (e.term, entry_field(e))
                self._entry_cache_bytes += len(hit[1])
            add(hit[1])
        return append_envelope(parts)

    def connected_peers(self):
        return set(self.outgoing)

    # ------------------------------------------------------- connections

    def connection_made(self, conn):
        if conn.expected_peer is None:
            self.incoming[conn.peer_id] = conn
        else:
            old = self.outgoing.get(conn.peer_id)
            self.outgoing[conn.peer_id] = conn
            if old is not None and old is not conn:
                old.transport.loseConnection()
            self.log.info("connected to peer {peer}", peer=conn.peer_id)

    def connection_lost(self, conn):
        if self.incoming.get(conn.peer_id) is conn:
            del self.incoming[conn.peer_id]
        if self.outgoing.get(conn.peer_id) is conn:
            del self.outgoing[conn.peer_id]
            self.log.info("lost connection to peer {peer}", peer=conn.peer_id)
            self.node.server.peer_lost(conn.peer_id)

    def raft_received(self, conn, m):
        if m.frm != conn.peer_id or m.to != self.node_id:
            return self.count_drop("misaddressed")
        self.node.server.receive(message_from_pb(m))

    # -------------------------------------------------------- forwarding

    def _link(self, peer_id):
        """The connection to send to ``peer_id`` on (ours, else the one it
        dialed), or None: not connected, or isolated (fault injection)."""
        if peer_id in self.isolated:
            return None
        return self.outgoing.get(peer_id) or self.incoming.get(peer_id)

    def can_reach(self, peer_id):
        return self._link(peer_id) is not None

    def send_proposals(self, leader_id, commands):
        """One `Proposals` message (several when large values would not fit
        one frame); returns the commands that could not be sent."""
        conn = self._link(leader_id)
        if conn is None:
            self.count_drop("proposals: leader not connected")
            return list(commands)
        unsent = []
        limit = self.max_frame // 2
        start = size = 0
        for i, command in enumerate(commands):
            if size and size + len(command) > limit:
                self._send_proposals(conn, commands[start:i], unsent)
                start, size = i, 0
            size += len(command) + 8
        self._send_proposals(conn, commands[start:], unsent)
        return unsent

    def _send_proposals(self, conn, commands, unsent):
        envelope = pb.PeerMessage()
        envelope.proposals.commands.extend(commands)
        if not conn.try_send(envelope):
            self.count_drop("proposals: send buffer full")
            unsent.extend(commands)

    def send_forward(self, peer_id, forward_id, request):
        conn = self._link(peer_id)
        if conn is None:
            return False
        envelope = pb.PeerMessage()
        envelope.forward.id = forward_id
        envelope.forward.request.CopyFrom(request)
        return conn.try_send(envelope)

    def send_forward_response(self, peer_id, forward_id, response):
        conn = self._link(peer_id)
        if conn is None:
            return  # the follower times the request out
        reply = pb.PeerMessage()
        reply.forward.id = forward_id
        reply.forward.response.CopyFrom(response)
        conn.try_send(reply)

    def forward_received(self, conn, fwd):
        if fwd.HasField("response"):
            self.node.server.forward_answered(fwd.id, fwd.response)
            return
        if not fwd.HasField("request") or fwd.request.WhichOneof("body") is None:
            return self.count_drop("empty forward")
        self.node.server.forward_received(conn.peer_id, fwd.id, fwd.request)

    # ---------------------------------------------------- fault injection

    def isolate(self, peer_ids):
        self.isolated.update(peer_ids)
        self.log.warn("fault injection: isolated from {peers}", peers=sorted(self.isolated))
        for peer_id in sorted(peer_ids):
            self.node.server.peer_lost(peer_id)

    def heal(self):
        self.isolated.clear()
        self.log.warn("fault injection: healed")


def make_peer_network(node):
    """The node's transport factory; the node adds it to its service tree."""
    return PeerNetwork(node, node._reactor)
