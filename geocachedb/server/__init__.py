"""The server layer: everything a node does between the wire and the Raft
core, with no reactor, on one injected clock.  The Twisted node hosts it;
the simulator drives the same code on every simulated node.

    server.py       Server: composes the rest; the inputs and `process`
    replica.py      the Raft host loop (persist, send, apply, snapshots)
    requests.py     client requests: validation, reads, writes
    forwarding.py   a follower's writes and requests sent to the leader
    membership.py   add/promote/remove/transfer (one promotion path)
    backups.py      backups being pulled by clients
    deadlines.py    the one clock and every timeout
    metrics.py      counters and latency figures for `stats`
"""
