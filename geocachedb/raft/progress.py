"""What a leader knows about each peer's log, and the flow control of the
AppendEntries it sends them.

Data flow: the leader's core asks a peer's `Progress` whether it may send
(`is_paused`), which index to send from (``next``), records what it sent
(`sent_entries`: optimistic ``next`` advance and the inflight window in
replicate state) and what the peer acknowledged (`maybe_update`,
`maybe_decr_to` on a rejection).  `ProgressTracker` holds one `Progress` per
member of a `ClusterConfig` and answers the quorum questions (commit index,
election result, quorum activity) over it.

States (as in etcd-io/raft's tracker/):

* PROBE: we do not know where the peer's log matches ours; send one
  AppendEntries at a time and wait for its answer (or a heartbeat answer).
* REPLICATE: the peer's log matches up to ``match``; stream entries,
  advancing ``next`` optimistically, with at most ``max_inflight`` messages
  unacknowledged.
* SNAPSHOT: the entries the peer needs are compacted away; the host streams
  it a snapshot (InstallSnapshot) and no AppendEntries go out until the peer
  reports its log matches at the snapshot's index (or the transfer fails).
"""

from collections import deque

from geocachedb.raft.quorum import MajorityConfig

PROBE = "probe"
REPLICATE = "replicate"
SNAPSHOT = "snapshot"


class Inflights:
    """The last index of each AppendEntries sent and not yet acknowledged,
    bounded by ``capacity`` messages."""

    __slots__ = ("capacity", "_queue")

    def __init__(self, capacity):
        self.capacity = capacity
        self._queue = deque()

    def add(self, last_index):
        self._queue.append(last_index)

    def free_le(self, index):
        """Forget every message whose entries the peer has acknowledged."""
        queue = self._queue
        while queue and queue[0] <= index:
            queue.popleft()

    def full(self):
        return len(self._queue) >= self.capacity

    def count(self):
        return len(self._queue)

    def reset(self):
        self._queue.clear()


class Progress:
    __slots__ = ("match", "next", "state", "probe_sent", "inflights",
                 "recent_active", "is_learner", "pending_snapshot",
                 "sent_commit", "answered")

    def __init__(self, next_index, max_inflight, is_learner=False):
        self.match = 0
        self.next = next_index
        self.state = PROBE
        # In PROBE: one AppendEntries is out; wait for its answer (or the
        # next heartbeat answer) before probing again.
        self.probe_sent = False
        self.inflights = Inflights(max_inflight)
        # Heard from since the last check-quorum round.
        self.recent_active = False
        # The commit index of the last AppendEntries sent: after an answer
        # the leader sends an empty one only if the peer's is out of date.
        self.sent_commit = 0
        # Answered an AppendEntries (or was sent a window probe) since the
        # last heartbeat tick; see RaftCore._handle_heartbeat_response.
        self.answered = False
        self.is_learner = is_learner
        self.pending_snapshot = 0

    def become_probe(self):
        if self.state == SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
            self.pending_snapshot = 0
        else:
            self.next = self.match + 1
        self.state = PROBE
        self.probe_sent = False
        self.inflights.reset()

    def become_replicate(self):
        self.state = REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, snapshot_index):
        """The peer needs a snapshot; ``snapshot_index`` is its index once
        the host has chosen one (0 until then)."""
        self.state = SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.probe_sent = False
        self.inflights.reset()

    def is_paused(self):
        state = self.state
        if state == REPLICATE:
            return self.inflights.full()
        if state == PROBE:
            return self.probe_sent
        return True

    def sent_entries(self, last_index):
        """Record an AppendEntries whose last entry is ``last_index`` (or,
        when it carried no entries, ``last_index`` = its prev index)."""
        if self.state == REPLICATE:
            if last_index >= self.next:
                self.next = last_index + 1
                self.inflights.add(last_index)
        else:
            self.probe_sent = True

    def maybe_update(self, index):
        """The peer's log matches ours up to ``index``.  Returns True when
        that is news (``match`` advanced)."""
        updated = False
        if self.match < index:
            self.match = index
            self.probe_sent = False
            updated = True
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected, match_hint):
        """The peer rejected an AppendEntries whose prev index was
        ``rejected``; ``match_hint`` is the highest index it may still match
        (from the fast-backtracking hint).  Returns False for a stale
        rejection (an answer to something we have moved past)."""
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def __repr__(self):
        return "Progress(%s match=%d next=%d inflight=%d)" % (
            self.state, self.match, self.next, self.inflights.count())


class ClusterConfig:
    """The membership a core works with: voters (a `MajorityConfig`) and
    learners, which receive the log but neither vote nor count toward a
    quorum.  ``addresses`` (member id -> peer address) rides along for the
    host, which must know where new members listen; the core ignores it.
    Immutable; membership changes build a new one
    (`geocachedb.raft.confchange`)."""

    __slots__ = ("voters", "learners", "addresses")

    def __init__(self, voters, learners=(), addresses=None):
        self.voters = MajorityConfig(voters)
        self.learners = tuple(sorted(set(learners) - set(self.voters.voters)))
        members = set(self.voters.voters) | set(self.learners)
        # Unknown (empty) addresses are left out: a CONF entry names only
        # addresses someone gave.
        self.addresses = {k: v for k, v in sorted((addresses or {}).items())
                          if k in members and v}

    def ids(self):
        return self.voters.voters + self.learners

    def __contains__(self, node_id):
        return node_id in self.voters or node_id in self.learners

    def __eq__(self, other):
        return (isinstance(other, ClusterConfig) and self.voters.voters == other.voters.voters
                and self.learners == other.learners and self.addresses == other.addresses)

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "ClusterConfig(voters=%r, learners=%r)" % (self.voters.voters, self.learners)


class ProgressTracker:
    """One `Progress` per member (and always one for ``self_id``, which a
    leader needs even while it manages a configuration that no longer
    includes it, thesis §4.2.2), plus the votes of the current election."""

    def __init__(self, config, max_inflight, self_id=None):
        self.config = config
        self.max_inflight = max_inflight
        self.self_id = self_id
        self.progress = {}
        self.votes = {}
        self.ids = config.ids()  # sorted per kind: voters then learners
        self.reset(1)

    def reset(self, next_index):
        learners = set(self.config.learners)
        ids = self.ids
        if self.self_id is not None and self.self_id not in self.config:
            ids = ids + (self.self_id,)
        self.progress = {
            node_id: Progress(next_index, self.max_inflight, node_id in learners)
            for node_id in ids
        }

    def set_config(self, config, next_index):
        """Switch to ``config``: members that stay keep their progress, new
        ones start probing at ``next_index``, removed ones are forgotten."""
        self.config = config
        self.ids = config.ids()
        learners = set(config.learners)
        old = self.progress
        progress = {}
        keep = self.ids
        if self.self_id is not None and self.self_id not in config:
            keep = keep + (self.self_id,)
        for node_id in keep:
            pr = old.get(node_id)
            if pr is None:
                pr = Progress(next_index, self.max_inflight)
            pr.is_learner = node_id in learners
            progress[node_id] = pr
        self.progress = progress
        # Votes of nodes that left no longer count (tally_votes only looks
        # at voters anyway); keep the rest of a running election.
        self.votes = {k: v for k, v in self.votes.items() if k in config.voters}

    def get(self, node_id):
        return self.progress.get(node_id)

    def is_voter(self, node_id):
        return node_id in self.config.voters

    def committed(self):
        """The largest index replicated on a majority of voters."""
        progress = self.progress
        return self.config.voters.committed_index(
            {v: progress[v].match for v in self.config.voters.voters})

    def quorum_active(self):
        """Whether a majority of voters were heard from recently."""
        votes = {v: self.progress[v].recent_active for v in self.config.voters.voters}
        # A vote_result with every voter answered is WON or LOST.
        return self.config.voters.vote_result(votes) == "won"

    def reset_votes(self):
        self.votes = {}

    def record_vote(self, node_id, granted):
        if node_id not in self.votes:
            self.votes[node_id] = granted

    def tally_votes(self):
        """Only the votes of voters count (a removed node's grant is
        worthless: its vote is not part of any quorum of this config)."""
        return self.config.voters.vote_result(self.votes)
