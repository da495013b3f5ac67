"""Membership changes: what a CONF entry carries, which changes a leader may
propose, and the history of configurations in a node's log.

Design (see docs/RAFT_IMPLEMENTATION.md, "Membership changes"):

* **Single-server changes** (thesis §4.1): add or remove one voter (or one
  learner) at a time.  Any majority of the old voters and any majority of
  the new ones then overlap, so the two configurations cannot elect two
  leaders in one term.
* **A configuration takes effect as soon as its entry is in the log**,
  committed or not — the rule the thesis' safety argument is written for.
  A node always uses the latest configuration in its log; when a follower's
  conflicting suffix is truncated, a CONF entry in it is truncated too and
  the node falls back to the previous configuration.
* A CONF entry carries the **whole resulting configuration** (plus the
  change that produced it, for operators), not a delta: a node that sees it
  needs nothing else to know the membership, and applying it twice is
  harmless.

`ConfHistory` is the log-derived state: the configuration as of a base index
(the state machine's applied index, or a snapshot's) plus every CONF entry in
the log after it, so that truncation can fall back and a leader can name the
configuration at the index of a snapshot it is about to send.
"""

import json

from geocachedb.raft.progress import ClusterConfig
from geocachedb.raft.types import CONF

ADD_VOTER = "add_voter"
ADD_LEARNER = "add_learner"
PROMOTE = "promote"
REMOVE = "remove"
KINDS = (ADD_VOTER, ADD_LEARNER, PROMOTE, REMOVE)

VOTER = "voter"
LEARNER = "learner"


class ConfChangeError(ValueError):
    """The change is not valid against the current configuration."""


class ConfChangeBusy(Exception):
    """No change may start now (one is in progress, or a new leader has not
    committed an entry of its term yet); retry shortly."""


def check_node_id(node_id):
    if not isinstance(node_id, str) or not node_id or len(node_id) > 255:
        raise ConfChangeError("bad node id %r" % (node_id,))
    if any(c.isspace() or c in ",=" for c in node_id):
        raise ConfChangeError("node id %r contains a space, ',' or '='" % (node_id,))


def check_address(address):
    if not isinstance(address, str) or not address or len(address) > 255 or any(
            c.isspace() for c in address):
        raise ConfChangeError("bad address %r" % (address,))


def apply_change(config, kind, node_id, address=None):
    """The configuration that results from one change to ``config``; raises
    `ConfChangeError` when the change makes no sense.  ``address`` (where
    an added node listens) is recorded for the host; it may also update a
    member's address on promote."""
    check_node_id(node_id)
    if address is not None:
        check_address(address)
    voters = set(config.voters.voters)
    learners = set(config.learners)
    addresses = dict(config.addresses)
    if kind == ADD_VOTER:
        if node_id in voters:
            raise ConfChangeError("%s is already a voter" % node_id)
        learners.discard(node_id)  # adding a learner as voter = promoting it
        voters.add(node_id)
    elif kind == ADD_LEARNER:
        if node_id in voters or node_id in learners:
            raise ConfChangeError("%s is already a member" % node_id)
        learners.add(node_id)
    elif kind == PROMOTE:
        if node_id not in learners:
            raise ConfChangeError("%s is not a learner" % node_id)
        learners.discard(node_id)
        voters.add(node_id)
    elif kind == REMOVE:
        if node_id not in voters and node_id not in learners:
            raise ConfChangeError("%s is not a member" % node_id)
        if voters == {node_id}:
            raise ConfChangeError("cannot remove the last voter")
        voters.discard(node_id)
        learners.discard(node_id)
    else:
        raise ConfChangeError("unknown change %r (one of %s)" % (kind, ", ".join(KINDS)))
    if address is not None and kind != REMOVE:
        addresses[node_id] = address
    return ClusterConfig(voters, learners, addresses)


def encode(config, kind="", node_id=""):
    """The data of a CONF entry: the whole configuration after the change
    (sorted, so every node encodes a configuration identically)."""
    doc = {"voters": list(config.voters.voters), "learners": list(config.learners)}
    if config.addresses:
        doc["addresses"] = config.addresses
    if kind:
        doc["change"] = [kind, node_id]
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode(data):
    """The configuration in a CONF entry's data; ValueError when malformed."""
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("CONF entry is not a configuration") from None
    if not isinstance(doc, dict):
        raise ValueError("CONF entry is not a configuration")
    voters = doc.get("voters")
    learners = doc.get("learners", [])
    if not isinstance(voters, list) or not isinstance(learners, list):
        raise ValueError("CONF entry is not a configuration")
    for node_id in voters + learners:
        try:
            check_node_id(node_id)
        except ConfChangeError as e:
            raise ValueError(str(e)) from None
    if set(voters) & set(learners):
        raise ValueError("a node is both voter and learner")
    addresses = doc.get("addresses", {})
    if not isinstance(addresses, dict):
        raise ValueError("CONF entry is not a configuration")
    for node_id, address in addresses.items():
        try:
            check_address(address)
        except ConfChangeError as e:
            raise ValueError(str(e)) from None
    return ClusterConfig(voters, learners, addresses)


def describe(data):
    """(kind, node_id) of the change recorded in a CONF entry, or None."""
    try:
        change = json.loads(bytes(data).decode("utf-8")).get("change")
    except (UnicodeDecodeError, ValueError, AttributeError):
        return None
    if isinstance(change, list) and len(change) == 2:
        return tuple(change)
    return None


def members(config):
    """``[(id, 'voter'|'learner')]`` in id order."""
    out = [(v, VOTER) for v in config.voters.voters] + [(n, LEARNER) for n in config.learners]
    out.sort()
    return out


class ConfHistory:
    """The configurations of one node's log: ``base`` as of ``base_index``
    and ``(index, config)`` of each CONF entry after it, in index order."""

    __slots__ = ("base", "base_index", "changes")

    def __init__(self, base, base_index):
        self.base = base
        self.base_index = base_index
        self.changes = []

    def latest(self):
        """(index, config) of the configuration in force (the newest in the
        log; ``base_index`` when there is no CONF entry after the base)."""
        if self.changes:
            return self.changes[-1]
        return self.base_index, self.base

    def at(self, index):
        """The configuration as of ``index``, or None when it precedes the
        base (not known any more)."""
        if index < self.base_index:
            return None
        found = self.base
        for i, config in self.changes:
            if i > index:
                break
            found = config
        return found

    def append(self, entries):
        """Record the CONF entries among ``entries`` (already validated by
        `check_message` or made by the leader itself)."""
        for e in entries:
            if e.kind == CONF:
                self.changes.append((e.index, decode(e.data)))

    def truncate_from(self, index):
        """Entries from ``index`` on left the log (a follower's conflict)."""
        while self.changes and self.changes[-1][0] >= index:
            self.changes.pop()

    def fold_to(self, index):
        """Entries up to ``index`` are applied: fold them into the base so
        the list stays short over a long run."""
        if index <= self.base_index:
            return
        while self.changes and self.changes[0][0] <= index:
            self.base = self.changes.pop(0)[1]
        self.base_index = index

    def reset(self, index, config):
        """A snapshot at ``index`` with ``config`` replaced the log."""
        self.base = config
        self.base_index = index
        self.changes = []

    def __repr__(self):
        return "ConfHistory(base=%r@%d, changes=%r)" % (self.base, self.base_index, self.changes)
