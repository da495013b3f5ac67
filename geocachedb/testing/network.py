"""The simulated network between Raft hosts.

Each simulated node gets a `SimTransport` (an `IPeerTransport`); what it
sends goes through `SimNetwork`, which decides — with the scheduler's one
RNG — whether the message is lost, how long it takes (so messages are
reordered), whether it is delivered twice, and whether a partition cuts it.
Partitions are directed link cuts, so a symmetric partition is two cuts and a
one-way partition is one.  A cut is checked both when a message is sent and
when it would arrive: a message in flight when a link is cut is lost, like
one in a TCP connection that is reset.

Besides Raft messages the network carries what forwarding to the leader
sends (`Parcel`s: a follower's batched writes, whole requests and their
responses), under the same weather and cuts but never duplicated (they
travel on TCP, which does not duplicate; Raft messages may be, since Raft
retransmits).

Messages are copied at send time: in production they cross a socket, so the
sender and receiver never share an object, and the simulation must not let
either side's later mutations leak to the other (requests and responses
travel encoded).
"""

from zope.interface import implementer

from geocachedb.interfaces import IPeerTransport


class LinkWeather:
    """How a link behaves now.  The nemesis replaces it during a run."""

    __slots__ = ("loss", "duplicate", "min_delay", "max_delay", "spike", "spike_delay")

    def __init__(self, loss=0.0, duplicate=0.0, min_delay=1, max_delay=10, spike=0.0, spike_delay=100):
        self.loss = loss  # probability a message is dropped
        self.duplicate = duplicate  # probability it is delivered twice
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.spike = spike  # probability of a long delay (heavy reordering)
        self.spike_delay = spike_delay

    def __repr__(self):
        return "LinkWeather(loss=%.2f, dup=%.2f, delay=%d..%d, spike=%.2f)" % (
            self.loss,
            self.duplicate,
            self.min_delay,
            self.max_delay,
            self.spike,
        )


class Parcel:
    """A non-Raft peer message: ``kind`` is ``proposals`` (payload: a list
    of encoded Commands), ``forward`` (forward id, encoded Request) or
    ``answer`` (forward id, encoded Response)."""

    __slots__ = ("kind", "frm", "payload")

    def __init__(self, kind, frm, payload):
        self.kind = kind
        self.frm = frm
        self.payload = payload

    def __repr__(self):
        return "Parcel(%s from %s)" % (self.kind, self.frm)


def copy_message(message):
    """A copy of a `geocachedb.raft.types.Message` as the receiver would get
    it from the wire: a new object with its own entries list."""
    cls = type(message)
    new = cls.__new__(cls)
    for klass in cls.__mro__:
        for name in getattr(klass, "__slots__", ()):
            if hasattr(message, name):
                setattr(new, name, getattr(message, name))
    if hasattr(message, "__dict__"):
        new.__dict__.update(message.__dict__)
    entries = getattr(new, "entries", None)
    if isinstance(entries, (list, tuple)):
        new.entries = list(entries)
    return new


class SimNetwork:
    def __init__(self, scheduler, deliver, weather=None):
        """``deliver(node_id, message)`` is called when a message arrives
        (the cluster decides whether the node is up)."""
        self.scheduler = scheduler
        self.rng = scheduler.rng
        self._deliver = deliver
        self.weather = weather or LinkWeather()
        self._cut = set()  # directed (frm, to) pairs
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0
        self.delivered = 0
        self.cut_drops = 0

    def transport(self, node_id, before_send=None):
        return SimTransport(self, node_id, before_send)

    # -- partitions

    def cut(self, frm, to):
        self._cut.add((frm, to))

    def cut_both(self, a, b):
        self.cut(a, b)
        self.cut(b, a)

    def heal(self):
        self._cut.clear()

    def is_cut(self, frm, to):
        return (frm, to) in self._cut

    @property
    def cuts(self):
        return sorted(self._cut)

    # -- delivery

    def _delay(self):
        w = self.weather
        delay = self.rng.randint(w.min_delay, w.max_delay)
        if w.spike and self.rng.random() < w.spike:
            delay += self.rng.randint(0, w.spike_delay)
        return delay

    def send(self, frm, message):
        self.sent += 1
        to = message.to
        if (frm, to) in self._cut:
            self.cut_drops += 1
            return
        w = self.weather
        if w.loss and self.rng.random() < w.loss:
            self.dropped += 1
            return
        copies = 1
        if w.duplicate and self.rng.random() < w.duplicate:
            copies = 2
            self.duplicated += 1
        for _ in range(copies):
            self.scheduler.after(self._delay(), self._arrive, frm, to, copy_message(message))

    def send_parcel(self, frm, to, parcel):
        """Like `send`, for a `Parcel` (already a copy: its payload is
        bytes), and never duplicated."""
        self.sent += 1
        if (frm, to) in self._cut:
            self.cut_drops += 1
            return
        w = self.weather
        if w.loss and self.rng.random() < w.loss:
            self.dropped += 1
            return
        self.scheduler.after(self._delay(), self._arrive, frm, to, parcel)

    def _arrive(self, frm, to, message):
        if (frm, to) in self._cut:
            self.cut_drops += 1
            return
        self.delivered += 1
        self._deliver(to, message)


@implementer(IPeerTransport)
class SimTransport:
    """One node's view of the network.  ``before_send`` lets the cluster
    crash the node in the middle of a batch of sends.  A peer is reachable
    unless the link to it is cut (a crashed peer's connection is reported
    by the cluster: `Server.peer_lost`)."""

    def __init__(self, network, node_id, before_send=None):
        self.network = network
        self.node_id = node_id
        self.before_send = before_send
        self.closed = False

    def send(self, message):
        if self.closed:
            # A dropped Server object may still hold this transport.
            return
        if self.before_send is not None:
            self.before_send()
        self.network.send(self.node_id, message)

    def _parcel(self, to, kind, payload):
        if self.closed or not self.can_reach(to):
            return False
        if self.before_send is not None:
            self.before_send()
        self.network.send_parcel(self.node_id, to, Parcel(kind, self.node_id, payload))
        return True

    def can_reach(self, peer_id):
        return not self.closed and not self.network.is_cut(self.node_id, peer_id)

    def send_proposals(self, leader_id, commands):
        if self._parcel(leader_id, "proposals", list(commands)):
            return []
        return list(commands)

    def send_forward(self, peer_id, forward_id, request):
        return self._parcel(peer_id, "forward", (forward_id, request.SerializeToString()))

    def send_forward_response(self, peer_id, forward_id, response):
        self._parcel(peer_id, "answer", (forward_id, response.SerializeToString()))

    def update_members(self, addresses, member_ids):
        pass  # every simulated node can reach every other

    def connected_peers(self):
        return set()

    def isolate(self, peer_ids):
        pass  # the nemesis cuts links in the network itself

    def heal(self):
        pass
