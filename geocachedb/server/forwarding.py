"""Forwarding to the leader: what a follower does with a request it cannot
serve itself, and what the leader does with what followers send it.

Two paths, both over the peer transport (`IPeerTransport`):

* **Writes** (etcd's MsgProp path).  A follower sends the encoded `Command`
  to the leader, batched with the others of the same round in one
  `Proposals` message, and answers its client when it applies that entry
  itself, with the result a local proposal would get.  The command carries
  a ``proposal_id`` unique to this forwarded write, so an identical write
  from someone else, or this client's own earlier attempt, cannot answer
  it.  The leader checks each command (a bad one would be applied
  everywhere) and proposes it; it answers nothing.  A write not applied
  here within `SENT_WRITE_SECONDS` fails with UNAVAILABLE: its outcome is
  unknown, and a retry with the same session seq is applied at most once.
* **Whole requests** (membership changes, anything else a follower cannot
  serve).  The request goes to the leader as a `Forward` and its
  `Response` comes back verbatim; UNAVAILABLE after `FORWARD_SECONDS`, or
  at once when the connection to the leader is lost.

Both tables are `DeadlineQueue`s on the server's one clock.
"""

import itertools

from geocachedb import errors
from geocachedb.commands import check_command
from geocachedb.server.requests import error_response
from geocachedb.wire.commands import with_proposal_id

SENT_WRITE_SECONDS = 10
FORWARD_SECONDS = 10


def _ignore(result, error):
    pass


class Forwarding:
    def __init__(self, server, transport, deadlines, ticks_per_second, rng, max_value):
        self._server = server
        self._transport = transport
        self._max_value = max_value
        # encoded Command (unique: it carries a proposal_id) -> callback
        self._sent = deadlines.queue(SENT_WRITE_SECONDS * ticks_per_second, self._write_expired)
        # forward id -> (respond, leader id, request id)
        self._forwards = deadlines.queue(FORWARD_SECONDS * ticks_per_second, self._forward_expired)
        self._queued = {}  # leader id -> encoded Commands to send this round
        # Unique per forwarded write: a random start, then counting.
        self._proposal_ids = rng.getrandbits(64)
        # Random start too: a late answer meant for an earlier incarnation
        # of this node (a forward before a restart) must not match.
        self._forward_ids = itertools.count(rng.getrandbits(63) + 1)
        self.writes_forwarded = 0
        self.requests_forwarded = 0
        self.proposals_dropped = 0

    # ------------------------------------------------------ follower side --

    def propose_via(self, leader_id, data, callback):
        """Send the client write ``data`` (an encoded Command) to
        ``leader_id`` to propose; ``callback(result, error)`` when this
        node applies the entry.  False when the leader cannot be reached
        from here (the caller proposes locally and gets NOT_LEADER)."""
        if not self._transport.can_reach(leader_id):
            return False
        self._proposal_ids += 1
        data = with_proposal_id(data, self._proposal_ids)
        self._sent.add(data, callback)
        queued = self._queued.get(leader_id)
        if queued is None:
            queued = self._queued[leader_id] = []
        queued.append(data)
        self.writes_forwarded += 1
        self._server.schedule()
        return True

    def send_queued(self):
        """End of a round: one `Proposals` per leader for what was queued.
        Writes that could not be sent were never proposed: their clients
        hear so at once."""
        if not self._queued:
            return
        queued, self._queued = self._queued, {}
        for leader_id, commands in queued.items():
            unsent = self._transport.send_proposals(leader_id, commands)
            if unsent:
                self._unsent(unsent, "could not send the write to the leader %s; try again" % leader_id)

    def _unsent(self, commands, why):
        sent = self._sent
        for data in commands:
            callback = sent.pop(data)
            if callback is not None:
                callback(None, errors.Unavailable(why))

    def applied(self, entries, results):
        """`Replica.on_apply`: answer the forwarded writes these entries are."""
        sent = self._sent
        if not sent:
            return
        for entry, result in zip(entries, results):
            callback = sent.pop(entry.data)
            if callback is None:
                continue
            try:
                callback(result, None)
            except Exception:
                self._server.log_failure("answering a forwarded write failed")

    def _write_expired(self, data, callback):
        callback(None, errors.Unavailable(
            "the leader did not commit the write within %d s; its outcome is unknown" % SENT_WRITE_SECONDS))

    def forward(self, leader_id, request, respond):
        """Send ``request`` (a `pb.Request`) to the leader whole;
        ``respond(response)`` with its answer, or with UNAVAILABLE.
        Returns True (the request is taken care of)."""
        fid = next(self._forward_ids)
        self._forwards.add(fid, (respond, leader_id, request.id))
        self.requests_forwarded += 1
        if not self._transport.send_forward(leader_id, fid, request):
            self._fail(fid, "leader %s is not reachable from this node" % leader_id)
        return True

    def answered(self, forward_id, response):
        """The leader's response to a forwarded request."""
        entry = self._forwards.pop(forward_id)
        if entry is not None:
            entry[0](response)

    def peer_lost(self, peer_id):
        """The connection to ``peer_id`` is gone: what was forwarded to it
        will not be answered."""
        for fid, (_, leader_id, _) in self._forwards.items():
            if leader_id == peer_id:
                self._fail(fid, "connection to the leader %s lost; the outcome is unknown" % peer_id)

    def _forward_expired(self, fid, entry):
        respond, _, request_id = entry
        respond(error_response(request_id, errors.Unavailable(
            "the leader did not answer in time; the outcome is unknown")))

    def _fail(self, fid, why):
        entry = self._forwards.pop(fid)
        if entry is not None:
            respond, _, request_id = entry
            respond(error_response(request_id, errors.Unavailable(why)))

    # -------------------------------------------------------- leader side --

    def proposals_received(self, commands):
        """Propose each command a follower sent.  A command that is not a
        valid client write is dropped (and counted): it would be applied on
        every node.  Nothing is answered; a follower that is no longer
        talking to the leader times its writes out."""
        replica = self._server.replica
        max_value = self._max_value
        for data in commands:
            try:
                check_command(data, max_value)
            except Exception:
                self.proposals_dropped += 1
                self._server.metrics.count_error("DROPPED_PROPOSAL")
                continue
            replica.propose(data, _ignore)
        self._server.schedule()

    # ------------------------------------------------------------ closing --

    def close(self, why):
        for data, callback in self._sent.clear():
            callback(None, errors.Unavailable(why + "; the write's outcome is unknown"))
        for fid, (respond, _, request_id) in self._forwards.clear():
            respond(error_response(request_id, errors.Unavailable(why)))
        self._queued = {}
