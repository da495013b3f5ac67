"""Timeouts of many waiting requests without a timer each: the waiters sit
in a dict in deadline order (insertion order, when every waiter gets the
same timeout), and a periodic sweep pops the expired ones from the front.

Used by the node for the writes a follower sent to the leader
(`Node.propose_via`) and by the peer network for forwarded requests
(`PeerNetwork.forward`); a `callLater` per request cost more than the
forwarding itself (issue 8).
"""

# How often the sweeps run: a waiter fails up to this long after its deadline.
SWEEP_SECONDS = 1.0


def pop_expired(table, now, deadline_of):
    """Remove and return, oldest first, the ``(key, value)`` pairs at the
    front of ``table`` whose ``deadline_of(value)`` is at or before ``now``.
    ``table`` must be in deadline order."""
    expired = []
    for key, value in table.items():
        if deadline_of(value) > now:
            break
        expired.append((key, value))
    for key, _ in expired:
        del table[key]
    return expired
