"""Value types shared by the Raft core and everything that stores or carries
its data: log entries and the hard state.

These are plain slotted classes, not protobuf messages: the core creates and
compares many of them, and encoding happens once at the edge
(`geocachedb.wire` for peers, the log store for disk).
"""

# Entry kinds.  NORMAL entries carry an encoded `Command` (or nothing: the
# empty entry a new leader appends); CONF entries carry a configuration
# change (the seam for membership changes).
NORMAL = 0
CONF = 1


class Entry:
    __slots__ = ("index", "term", "kind", "data")

    def __init__(self, index, term, data=b"", kind=NORMAL):
        self.index = index
        self.term = term
        self.data = data
        self.kind = kind

    def __eq__(self, other):
        return (
            isinstance(other, Entry)
            and self.index == other.index
            and self.term == other.term
            and self.kind == other.kind
            and self.data == other.data
        )

    def __hash__(self):
        return hash((self.index, self.term, self.kind, self.data))

    def __repr__(self):
        return "Entry(index=%d, term=%d, kind=%d, %d bytes)" % (
            self.index,
            self.term,
            self.kind,
            len(self.data),
        )


class HardState:
    """What Raft must remember across a crash besides the log."""

    __slots__ = ("term", "vote", "commit")

    def __init__(self, term=0, vote=None, commit=0):
        self.term = term
        self.vote = vote  # a node id (str) or None
        self.commit = commit

    def __eq__(self, other):
        return (
            isinstance(other, HardState)
            and self.term == other.term
            and self.vote == other.vote
            and self.commit == other.commit
        )

    def __repr__(self):
        return "HardState(term=%d, vote=%r, commit=%d)" % (
            self.term,
            self.vote,
            self.commit,
        )


# ---------------------------------------------------------------- messages --
#
# Message types.  These numbers are the `RaftMessage.type` values on the wire
# (proto/geocache.proto): never renumber, only add.  Field use per type:
#
#   APP             term, log_term/index = the entry before `entries`, entries, commit
#   APP_RESP        term, index = last index now matching (accept) or the rejected
#                   prev index (reject); reject_hint/hint_term = where the leader
#                   should probe next (fast backtracking, see RaftLog.find_conflict_by_term)
#   VOTE, PRE_VOTE  term (for PRE_VOTE: the term the sender would campaign at),
#                   log_term/index = the sender's last entry
#   *_VOTE_RESP     term, reject
#   HEARTBEAT       term, commit = min(follower's match, leader commit), context
#   HEARTBEAT_RESP  term, context (echoed: confirms leadership for ReadIndex)
#   READ_INDEX      term, context (a follower asks the leader for a read index)
#   READ_INDEX_RESP term, index = the read index, context (echoed), reject
#   SNAPSHOT        InstallSnapshot, one chunk: term, index/log_term = the
#                   snapshot's last entry, commit = byte offset of this chunk in
#                   the stream, context = flags byte (bit 0: last chunk) + the
#                   snapshot's encoded configuration, snapshot = chunk bytes
#   TIMEOUT_NOW     leadership transfer: term; the receiver campaigns at once
#   SNAPSHOT_RESP   a chunk's acknowledgement: term, index = the snapshot's
#                   index, commit = bytes received so far (the next offset
#                   wanted), reject = start over (lost spool, bad data).  The
#                   installed snapshot is acknowledged with an APP_RESP at its
#                   index, like any other log that matches there.
#   VOTE            context = TRANSFER_CONTEXT when campaigning on TIMEOUT_NOW:
#                   voters then grant despite the leader lease
APP = 1
APP_RESP = 2
VOTE = 3
VOTE_RESP = 4
PRE_VOTE = 5
PRE_VOTE_RESP = 6
HEARTBEAT = 7
HEARTBEAT_RESP = 8
READ_INDEX = 9
READ_INDEX_RESP = 10
SNAPSHOT = 11
TIMEOUT_NOW = 12
SNAPSHOT_RESP = 13

# The context of a VOTE sent on TIMEOUT_NOW (etcd-io/raft's campaignTransfer).
TRANSFER_CONTEXT = b"transfer"

MESSAGE_TYPE_NAMES = {
    APP: "APP",
    APP_RESP: "APP_RESP",
    VOTE: "VOTE",
    VOTE_RESP: "VOTE_RESP",
    PRE_VOTE: "PRE_VOTE",
    PRE_VOTE_RESP: "PRE_VOTE_RESP",
    HEARTBEAT: "HEARTBEAT",
    HEARTBEAT_RESP: "HEARTBEAT_RESP",
    READ_INDEX: "READ_INDEX",
    READ_INDEX_RESP: "READ_INDEX_RESP",
    SNAPSHOT: "SNAPSHOT",
    TIMEOUT_NOW: "TIMEOUT_NOW",
    SNAPSHOT_RESP: "SNAPSHOT_RESP",
}


class Message:
    """One Raft message between peers.  The fields are exactly those of the
    protobuf `RaftMessage`; the peer protocol converts 1:1.  ``entries``
    holds `Entry` objects whose ``data`` is the client's encoded bytes,
    never re-encoded by the core."""

    __slots__ = (
        "type",
        "to",
        "frm",
        "term",
        "log_term",
        "index",
        "entries",
        "commit",
        "reject",
        "reject_hint",
        "hint_term",
        "context",
        "snapshot",
    )

    def __init__(
        self,
        type=0,
        to="",
        frm="",
        term=0,
        log_term=0,
        index=0,
        entries=None,
        commit=0,
        reject=False,
        reject_hint=0,
        hint_term=0,
        context=b"",
        snapshot=b"",
    ):
        self.type = type
        self.to = to
        self.frm = frm
        self.term = term
        self.log_term = log_term
        self.index = index
        self.entries = entries if entries is not None else []
        self.commit = commit
        self.reject = reject
        self.reject_hint = reject_hint
        self.hint_term = hint_term
        self.context = context
        self.snapshot = snapshot

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    __hash__ = None

    def copy(self, **changes):
        fields = {f: getattr(self, f) for f in self.__slots__}
        fields["entries"] = list(self.entries)
        fields.update(changes)
        return Message(**fields)

    def __repr__(self):
        parts = ["%s %s->%s t%d" % (MESSAGE_TYPE_NAMES.get(self.type, self.type),
                                    self.frm, self.to, self.term)]
        if self.log_term or self.index:
            parts.append("lt%d i%d" % (self.log_term, self.index))
        if self.entries:
            parts.append("ents=%d..%d" % (self.entries[0].index, self.entries[-1].index))
        if self.commit:
            parts.append("c%d" % self.commit)
        if self.reject:
            parts.append("REJECT hint=%d/%d" % (self.reject_hint, self.hint_term))
        if self.context:
            parts.append("ctx=%r" % (self.context[:32],))
        if self.snapshot:
            parts.append("snap=%d bytes" % len(self.snapshot))
        return "Message(%s)" % " ".join(parts)


# ------------------------------------------------------------------- roles --

FOLLOWER = "follower"
PRE_CANDIDATE = "pre-candidate"
CANDIDATE = "candidate"
LEADER = "leader"


# ------------------------------------------------------------------ config --


class RaftConfig:
    """Tunables of the core.  Times are in ticks (the host decides how long
    a tick is).

    election_ticks  a follower that hears nothing from a leader for a random
                    time in [election_ticks, 2*election_ticks) campaigns; a
                    leader with check_quorum steps down after election_ticks
                    without hearing from a quorum.
    heartbeat_ticks a leader sends heartbeats this often.
    max_msg_bytes   bound on the entry data of one AppendEntries (always at
                    least one entry); also bounds committed entries per Ready
                    (times `apply_batch_factor`).
    max_inflight    AppendEntries in flight per follower in replicate state.
    pre_vote        campaign only after a pre-vote round says it could win
                    (a rejoining partitioned node does not bump terms).
    check_quorum    a leader steps down when it has not heard from a quorum
                    for an election timeout, and followers that heard from a
                    leader recently ignore vote requests (leader lease).
    snapshot_entries    the host compacts the log once it holds this many
                    applied entries since the last compaction (0: never).
    compaction_overhang entries kept below the applied index when compacting,
                    so a follower that is only a little behind still gets
                    AppendEntries instead of a whole snapshot.
    snapshot_chunk_bytes size of one InstallSnapshot chunk; one chunk per
                    follower is in flight (and in memory) at a time.
    promote_max_lag a learner is promoted only when its log is within this
                    many entries of the leader's.
    """

    election_ticks = 10
    heartbeat_ticks = 1
    max_msg_bytes = 1 << 20
    max_inflight = 256
    pre_vote = True
    check_quorum = True
    # Committed entries handed out per Ready are bounded by
    # max_msg_bytes * apply_batch_factor so that one storage transaction stays
    # reasonable after a long catch-up.
    apply_batch_factor = 16
    snapshot_entries = 10000
    compaction_overhang = 1000
    snapshot_chunk_bytes = 256 * 1024
    promote_max_lag = 1000

    def __init__(self, **options):
        for name, value in options.items():
            if not hasattr(RaftConfig, name) or name.startswith("_"):
                raise TypeError("unknown RaftConfig option %r" % (name,))
            setattr(self, name, value)
        self.validate()

    def validate(self):
        if self.heartbeat_ticks < 1:
            raise ValueError("heartbeat_ticks must be >= 1")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks must be > heartbeat_ticks")
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")
        if self.max_msg_bytes < 1:
            raise ValueError("max_msg_bytes must be >= 1")
        if self.snapshot_entries < 0 or self.compaction_overhang < 0:
            raise ValueError("snapshot_entries and compaction_overhang must be >= 0")
        if self.snapshot_chunk_bytes < 1:
            raise ValueError("snapshot_chunk_bytes must be >= 1")
        if self.promote_max_lag < 0:
            raise ValueError("promote_max_lag must be >= 0")

    def __repr__(self):
        return "RaftConfig(election_ticks=%d, heartbeat_ticks=%d, max_msg_bytes=%d, " \
               "max_inflight=%d, pre_vote=%r, check_quorum=%r, snapshot_entries=%d, " \
               "compaction_overhang=%d)" % (
                   self.election_ticks, self.heartbeat_ticks, self.max_msg_bytes,
                   self.max_inflight, self.pre_vote, self.check_quorum,
                   self.snapshot_entries, self.compaction_overhang)


# ------------------------------------------------------------------- ready --


class ReadState:
    """A read request that the core has settled: once the host's applied
    index reaches ``index`` a linearizable read may be served locally.
    ``rejected`` means it could not be confirmed (no leader, leader lost);
    ``context`` is the host's request id."""

    __slots__ = ("index", "context", "rejected")

    def __init__(self, index, context, rejected=False):
        self.index = index
        self.context = context
        self.rejected = rejected

    def __eq__(self, other):
        return (
            isinstance(other, ReadState)
            and self.index == other.index
            and self.context == other.context
            and self.rejected == other.rejected
        )

    __hash__ = None

    def __repr__(self):
        return "ReadState(%d, %r%s)" % (self.index, self.context,
                                        ", rejected" if self.rejected else "")


class Ready:
    """One batch of work the core hands its host (see docs/RAFT_IMPLEMENTATION.md).

    The host must, in this order:

    1. send ``messages_before_sync`` (a leader's AppendEntries/heartbeats:
       they depend on nothing this Ready persists; the leader only counts
       its own copy of new entries once `advance` reports them synced);
    2. append ``entries`` to the log (the first may overwrite a suffix),
       record ``hard_state`` when not None, and `sync()` once when
       ``must_sync`` (entries, term or vote changed);
    3. send ``messages`` (votes, vote grants, append acks: they depend on
       what was just made durable);
    4. apply ``committed_entries`` (one storage batch) and serve
       ``read_states`` whose index is applied;
    5. snapshots: start streaming one to each peer in ``snapshot_requests``
       (leader; report the chosen index with `snapshot_sending`), and spool
       the ``snapshot_chunks`` received (follower; after the last one,
       install it and call `restore`);
    6. call the core's `advance(ready)`.
    """

    __slots__ = (
        "hard_state",
        "entries",
        "must_sync",
        "messages_before_sync",
        "messages",
        "committed_entries",
        "read_states",
        "snapshot_requests",
        "snapshot_chunks",
    )

    def __init__(self):
        self.hard_state = None
        self.entries = []
        self.must_sync = False
        self.messages_before_sync = []
        self.messages = []
        self.committed_entries = []
        self.read_states = []
        self.snapshot_requests = []  # peer ids (leader)
        self.snapshot_chunks = []  # SNAPSHOT messages accepted (follower)

    def __repr__(self):
        return ("Ready(hs=%r, entries=%d, sync=%r, early=%d, msgs=%d, committed=%d, reads=%d, "
                "snap_req=%r, snap_chunks=%d)") % (
            self.hard_state, len(self.entries), self.must_sync,
            len(self.messages_before_sync), len(self.messages),
            len(self.committed_entries), len(self.read_states),
            self.snapshot_requests, len(self.snapshot_chunks))


class SnapshotMeta:
    """What a snapshot stands for: the state machine after applying every
    entry up to ``index`` (whose term is ``term``), and the configuration
    in force there (``config``, a `ClusterConfig`)."""

    __slots__ = ("index", "term", "config")

    def __init__(self, index, term, config):
        self.index = index
        self.term = term
        self.config = config

    def __eq__(self, other):
        return (isinstance(other, SnapshotMeta) and self.index == other.index
                and self.term == other.term and self.config == other.config)

    __hash__ = None

    def __repr__(self):
        return "SnapshotMeta(index=%d, term=%d, %r)" % (self.index, self.term, self.config)
