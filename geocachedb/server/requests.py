"""Client requests in, responses out: validation and execution of the
key-value API on one node, whoever leads.

Sits between whatever parsed the request (the client protocol, a forwarded
request from a peer, the admin shell, a simulated client) and the `Server`
(which owns the Raft replica).  Every request gets exactly one response
through the ``respond`` callback it was given.

* Writes become encoded `Command`s.  The leader proposes them; a follower
  that knows the leader sends them there and answers from its own apply
  (`Forwarding.propose_via`).
* Linearizable reads wait for a ReadIndex barrier (a follower asks the
  leader for the index) and are then served from the local state machine;
  serializable reads are served at once.
* Anything else a follower cannot serve (membership changes) goes to the
  leader whole, and the leader's response comes back verbatim.  A request
  that was itself forwarded is never forwarded again (no loops while
  leadership moves).
* While no leader is known, a request waits (bounded) for an election.

Callbacks, not Deferreds, on this path: it runs once per request, and the
simulator drives it with no reactor at all.
"""

import logging
import time

from geocachedb import commands, errors, identity
from geocachedb.commands import (
    check_delete, check_incr, check_key, check_put_sequential, check_range, check_txn,
    check_value, encode_delete, encode_put, response_of,
)
from geocachedb.limits import MAX_VALUE_SIZE
from geocachedb.wire import geocache_pb2 as pb

log = logging.getLogger("geocachedb.server")

MEMBER_ACTIONS = ("list", "add", "promote", "remove", "transfer")



def check_address(address):
    """``HOST:PORT`` or raise InvalidArgument."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise errors.InvalidArgument("address %r is not HOST:PORT" % address)


def error_response(request_id, error):
    response = pb.Response(id=request_id)
    if not isinstance(error, errors.GeoCacheError):
        error = errors.Internal(str(error) or type(error).__name__)
    error.to_pb(response.error)
    return response


class RequestHandler:
    """Executes `pb.Request`s against a `geocachedb.server.server.Server`."""

    def __init__(self, server, max_value=MAX_VALUE_SIZE, clock=time.monotonic):
        self.server = server
        self.metrics = server.metrics
        self._clock = clock  # for the latency figures only, never for decisions
        self._forwarded = False
        self.max_value = max_value
        self._member_id = identity.member_id(server.node_id)
        self._cluster_id = identity.cluster_id(server.cluster_name)
        self._handlers = {
            "get": self._get,
            "put": self._put,
            "delete": self._delete,
            "range": self._range,
            "status": self._status,
            "member": self._member,
            "backup": self._backup,
            "txn": self._txn,
            "compact": self._compact,
            "incr": self._incr,
            "put_sequential": self._put_sequential,
        }

    def handle(self, request, respond, forwarded=False):
        """Run ``request``; ``respond(response)`` exactly once.  A request
        that a follower forwarded here is never forwarded again."""
        kind = request.WhichOneof("body")
        rid = request.id
        metrics = self.metrics
        if kind is None:
            metrics.count_error("INVALID_ARGUMENT")
            respond(error_response(rid, errors.InvalidArgument("empty request: no operation given")))
            return
        metrics.count_request(kind)
        start = self._clock()

        def timed(response, respond=respond):
            metrics.observe_latency(self._clock() - start)
            respond(response)

        def with_header(response, respond=timed):
            self._header(response)
            respond(response)

        respond = with_header
        # Read by `_done` while the handler runs (synchronously) below.
        self._forwarded = forwarded
        try:
            self._handlers[kind](request, respond)
        except errors.GeoCacheError as e:
            metrics.count_error(e.code_name)
            respond(error_response(rid, e))
        except Exception as e:  # a bug must cost one request, not the node
            log.exception("request %s failed", kind)
            metrics.count_error("INTERNAL")
            respond(error_response(rid, errors.Internal("internal error: %s" % e)))

    def _header(self, response, revision=None):
        header = response.header
        if revision is not None or not header.revision:
            header.revision = self.server.state_machine.revision if revision is None else revision
        header.cluster_id = self._cluster_id
        header.member_id = self._member_id
        header.raft_term = self.server.replica.term

    def _done(self, request, respond, build):
        """A callback(result, error) that responds with build(result), or
        sends the request to the leader when this node is not it."""
        rid = request.id
        forwarded = self._forwarded

        def done(result, error):
            if error is not None and not forwarded and self._forward(error, request, respond):
                return
            if error is not None:
                self.metrics.count_error(getattr(error, "code_name", "INTERNAL"))
                respond(error_response(rid, error))
            else:
                respond(build(result))

        return done

    def _forward(self, error, request, respond):
        if isinstance(error, errors.NotLeader) and error.leader_id:
            return self.server.forwarding.forward(error.leader_id, request, respond)
        return False

    def _write(self, data, done):
        """Replicate an encoded Command: proposed here on the leader; a
        follower that knows the leader sends it there and answers when it
        applies the entry (`Forwarding.propose_via`)."""
        server = self.server
        if not self._forwarded:
            leader = server.leader_elsewhere()
            if leader is not None and server.forwarding.propose_via(leader, data, done):
                return
        server.submit_write(data, done)

    def _write_command(self, request, respond, op, body):
        """Replicate ``body`` as command ``op``; answer with the Response
        the state machine computed when it applied it (the same on every
        node, and what a retry gets from the dedup table)."""
        data = commands.encode(op, body, request.client_id, request.seq, request.ack_floor)
        if len(data) > commands.MAX_TXN_BYTES:
            raise errors.TooLarge("request of %d bytes is larger than the limit of %d bytes"
                                  % (len(data), commands.MAX_TXN_BYTES))
        self._write(data, self._done(request, respond, self._applied(request.id)))

    def _applied(self, rid):
        def build(result):
            response = response_of(result)
            response.id = rid
            if response.HasField("error"):
                self.metrics.count_error(pb.ErrorCode.Name(response.error.code))
            return response

        return build

    def _put(self, request, respond):
        put = request.put
        check_key(put.key)
        check_value(put.value, self.max_value)
        data = encode_put(put.key, put.value, request.client_id, request.seq, request.ack_floor,
                          put.prev_kv)
        self._write(data, self._done(request, respond, self._applied(request.id)))

    def _delete(self, request, respond):
        d = request.delete
        check_delete(d)
        data = encode_delete(d.key, request.client_id, request.seq, request.ack_floor,
                             d.range_end, d.prev_kv)
        self._write(data, self._done(request, respond, self._applied(request.id)))

    def _txn(self, request, respond):
        check_txn(request.txn, self.max_value)
        self._write_command(request, respond, "txn", request.txn)

    def _incr(self, request, respond):
        check_incr(request.incr)
        self._write_command(request, respond, "incr", request.incr)

    def _put_sequential(self, request, respond):
        check_put_sequential(request.put_sequential, self.max_value)
        self._write_command(request, respond, "put_sequential", request.put_sequential)

    def _compact(self, request, respond):
        if not request.compact.revision:
            raise errors.InvalidArgument("compact needs a revision")
        self._write_command(request, respond, "compact", request.compact)

    def _read(self, request, serializable, respond, read):
        def guarded():
            try:
                return read()
            except errors.GeoCacheError as e:
                self.metrics.count_error(e.code_name)
                return error_response(request.id, e)

        if serializable:
            respond(guarded())
            return
        self.server.read_barrier(self._done(request, respond, lambda _: guarded()))

    def _get(self, request, respond):
        g = request.get
        key = g.key
        check_key(key)
        rid = request.id
        state_machine = self.server.state_machine

        def read():
            kv = state_machine.get_kv(key, g.revision)
            response = pb.Response(id=rid)
            if kv is None:
                response.get.found = False
            else:
                get = response.get
                get.found = True
                get.value = kv.value
                kv.to_pb(get.kv)
            return response

        self._read(request, g.serializable, respond, read)

    def _range(self, request, respond):
        r = request.range
        check_range(r)
        rid = request.id
        state_machine = self.server.state_machine

        def read():
            response = pb.Response(id=rid)
            state_machine.range(r, response.range)
            return response

        self._read(request, r.serializable, respond, read)

    def _member(self, request, respond):
        m = request.member
        if m.action not in MEMBER_ACTIONS:
            raise errors.InvalidArgument(
                "member action must be one of %s, not %r" % (", ".join(MEMBER_ACTIONS), m.action)
            )
        if m.action != "list" and not m.node_id:
            raise errors.InvalidArgument("member %s needs a node id" % m.action)
        if m.action == "add":
            if not m.address:
                raise errors.InvalidArgument("member add needs the new node's HOST:PORT")
            check_address(m.address)
        rid = request.id

        def build(members):
            response = pb.Response(id=rid)
            response.member.SetInParent()
            for member in members:
                response.member.members.add(
                    id=member["id"], address=member["address"] or "", role=member["role"],
                    is_leader=member["is_leader"],
                )
            return response

        self.server.membership.change(
            m.action, m.node_id, m.address, m.learner, self._done(request, respond, build)
        )

    def _backup(self, request, respond):
        rid = request.id
        backup_id = request.backup.backup_id
        server = self.server
        backups = server.backups

        def chunk_response(bid):
            chunk, done, index = backups.next_chunk(bid)
            return pb.Response(
                id=rid, backup=pb.BackupResponse(backup_id=bid, chunk=chunk, done=done, index=index)
            )

        if backup_id:
            respond(chunk_response(backup_id))
            return

        def opened(_, error):
            if error is not None:
                respond(error_response(rid, error))
                return
            try:
                respond(chunk_response(backups.open(*server.replica.snapshot())))
            except errors.GeoCacheError as e:
                respond(error_response(rid, e))

        # Open it at a linearizable point: every write acknowledged before
        # the request is in the backup.
        server.read_barrier(opened)

    def _status(self, request, respond):
        replica = self.server.replica
        respond(
            pb.Response(
                id=request.id,
                status=pb.StatusResponse(
                    node_id=replica.node_id,
                    role=replica.role,
                    term=replica.term,
                    leader_id=replica.leader_id or "",
                    commit_index=replica.commit_index,
                    applied_index=replica.applied_index,
                    revision=self.server.state_machine.revision,
                    compact_revision=self.server.state_machine.compact_revision,
                ),
            )
        )
