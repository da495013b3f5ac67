"""Stable 64-bit ids for a cluster and its members, as etcd's response
headers carry them.  Node ids are names ("n1"); the numbers are derived
from them, so every node computes the same ids with nothing stored, and a
member keeps its id across restarts, snapshots and restores."""

import hashlib


def _id64(kind, name):
    digest = hashlib.sha256(b"geocache-%s:%s" % (kind, name.encode("utf-8"))).digest()
    # Never 0: etcd reads 0 as "no member".
    return int.from_bytes(digest[:8], "big") or 1


def member_id(node_id):
    return _id64(b"member", node_id)


def cluster_id(name):
    return _id64(b"cluster", name)
