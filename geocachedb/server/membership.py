"""Membership and leadership operations of one node: list, add, promote,
remove, transfer.

Every entry point reaches this through a `member` request (the client, the
CLI, the admin shell, a node asking to join, the simulator's operator), so
a follower forwards it to the leader like any request it cannot serve.

There is one promotion path: ``add`` without ``learner`` asks the core for
``add_voter``, which adds the node as a learner and promotes it once the
leader sees it caught up (`RaftCore.propose_conf_change`, retried by the
core while another change is in progress).  The answer comes when the
promotion is applied, or UNAVAILABLE when it has not caught up within
`Replica.promote_timeout_ticks` (it stays a learner; the leader still
promotes it when it catches up, or ``promote`` does it by hand).
"""

from geocachedb import errors

_KINDS = {"add": "add_learner", "promote": "promote", "remove": "remove"}


class Membership:
    def __init__(self, server):
        self._server = server

    def members(self):
        """``[{id, address, role, is_leader, is_self}]`` as this node sees
        the configuration in force."""
        server = self._server
        replica = server.replica
        leader = replica.leader_id
        addresses = replica.addresses()
        out = []
        for node_id, role in replica.members():
            out.append({
                "id": node_id,
                "address": server.address_of(node_id) or addresses.get(node_id, ""),
                "role": role,
                "is_leader": node_id == leader,
                "is_self": node_id == replica.node_id,
            })
        return out

    def change(self, action, node_id, address, learner, callback):
        """Run a membership action on the leader; ``callback(members,
        error)`` (NOT_LEADER with the leader's id on a follower, which the
        request path forwards)."""
        server = self._server
        replica = server.replica
        if action == "list":
            callback(self.members(), None)
            return

        def done(result, error):
            callback(None if error is not None else self.members(), error)

        # Idempotent on the leader, so that a client's retry of an add or a
        # remove that already happened succeeds instead of failing.  Only
        # on a committed configuration, and only once a ReadIndex round has
        # confirmed this node still leads: a stale leader's own appended
        # change may still be lost, and a stale leader's committed view may
        # be long out of date (the simulator found both: seeds 109 with
        # pre-vote and check-quorum off, and 3434).
        if action in ("add", "remove") and replica.role == "leader" and self._already(action, node_id):
            def confirmed(result, error):
                if error is not None:
                    callback(None, error)
                elif self._already(action, node_id):
                    callback(self.members(), None)
                else:
                    self._start(action, node_id, address, learner, done)

            self._confirm_leadership(confirmed)
            return
        self._start(action, node_id, address, learner, done)

    def _confirm_leadership(self, callback):
        self._server.read_barrier(callback)

    def _already(self, action, node_id):
        replica = self._server.replica
        if not replica.conf_committed():
            return False
        current = dict(replica.members())
        return (node_id not in current) if action == "remove" else (node_id in current)

    def _start(self, action, node_id, address, learner, done):
        server = self._server
        if action == "transfer":
            def start(cb):
                server.replica.transfer_leadership(node_id, cb)
        elif action in _KINDS:
            kind = "add_voter" if action == "add" and not learner else _KINDS[action]

            def start(cb):
                server.replica.propose_conf_change(kind, node_id, cb, address=address or None)
        else:
            done(None, errors.InvalidArgument("unknown member action %r" % action))
            return
        server.leader_aware(start, done)
