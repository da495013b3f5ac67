"""The Raft state machine: a pure, deterministic, single-threaded core in
the style of etcd-io/raft's RawNode.

Inputs: `tick()` (one unit of logical time), `step(message)` (a message
from a peer), `propose(data)` and `read_index(context)` (from the host's
clients).  Output: `ready()` hands the host one `Ready` batch (entries and
hard state to persist, messages to send before and after the sync,
committed entries to apply, confirmed reads); the host does the work and
calls `advance(ready)`.  See docs/RAFT_IMPLEMENTATION.md for the contract
and `geocachedb.server.replica` for the one loop that drives it.

No I/O, no clock, no hashing-order dependence: peers are iterated in sorted
order and randomness comes from the injected `random.Random`, so a run is a
function of its inputs and the seed.

Section numbers in comments refer to the Raft paper (Ongaro & Ousterhout,
"In Search of an Understandable Consensus Algorithm", extended version) and
"§thesis" to Ongaro's dissertation.
"""

from geocachedb.raft import confchange
from geocachedb.raft import types as t
from geocachedb.raft.log import LogInvariantError, RaftLog
from geocachedb.raft.progress import PROBE, REPLICATE, SNAPSHOT, ClusterConfig, ProgressTracker
from geocachedb.raft.quorum import VOTE_LOST, VOTE_WON
from geocachedb.raft.readindex import ReadIndexQueue
from geocachedb.raft.types import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    Entry,
    HardState,
    Message,
    RaftConfig,
    Ready,
    ReadState,
    SnapshotMeta,
)

# Messages a host may send before the Ready's sync: they depend on nothing
# that Ready persists (see `ready`).  A leader's AppendEntries is the one that
# matters for latency: followers persist in parallel with the leader.
_EARLY_TYPES = frozenset((t.APP, t.HEARTBEAT, t.READ_INDEX, t.READ_INDEX_RESP))

_KNOWN_TYPES = frozenset(t.MESSAGE_TYPE_NAMES)

# `_pending_bcast` levels: send new entries / also send empty appends that
# only carry a new commit index.
_BCAST_ENTRIES = 1
_BCAST_COMMIT = 2


def check_message(m):
    """Raise ValueError when ``m`` is not a well-formed Message.  The core
    trusts peers to follow the protocol (Raft is not Byzantine-tolerant) but
    never trusts the bytes: a garbled message must not corrupt the log."""
    if not isinstance(m, Message):
        raise ValueError("not a Message: %r" % (type(m),))
    if m.type not in _KNOWN_TYPES:
        raise ValueError("unknown message type %r" % (m.type,))
    for name in ("term", "log_term", "index", "commit", "reject_hint", "hint_term"):
        v = getattr(m, name)
        if type(v) is not int or v < 0:
            raise ValueError("bad %s %r" % (name, v))
    if not isinstance(m.frm, str) or not m.frm or not isinstance(m.to, str):
        raise ValueError("bad sender/recipient")
    if not isinstance(m.context, bytes) or not isinstance(m.snapshot, bytes):
        raise ValueError("bad context or snapshot")
    if m.type == t.SNAPSHOT:
        if m.index < 1 or not m.context:
            raise ValueError("SNAPSHOT without index or metadata")
        confchange.decode(m.context[1:])
    if m.entries:
        if m.type != t.APP:
            raise ValueError("entries on a %s message" % t.MESSAGE_TYPE_NAMES[m.type])
        expect = m.index + 1
        for e in m.entries:
            if (not isinstance(e, Entry) or e.index != expect or type(e.term) is not int
                    or e.term < m.log_term or e.term > m.term or not isinstance(e.data, bytes)):
                raise ValueError("bad entry %r in APP after %d" % (e, m.index))
            if e.kind == t.CONF:
                confchange.decode(e.data)
            elif e.kind != t.NORMAL:
                raise ValueError("unknown entry kind %r" % (e.kind,))
            expect += 1


def snapshot_flags(m):
    """(is_last_chunk, config) of a checked SNAPSHOT message."""
    return bool(m.context[0] & 1), confchange.decode(m.context[1:])


def snapshot_chunk(to, frm, term, meta, offset, data, last):
    """One InstallSnapshot chunk (see the SNAPSHOT row in `types`)."""
    flags = b"\x01" if last else b"\x00"
    return Message(t.SNAPSHOT, to, frm, term, log_term=meta.term, index=meta.index,
                   commit=offset, context=flags + confchange.encode(meta.config),
                   snapshot=data)


class RaftCore:
    def __init__(self, node_id, voters, storage, config=None, rng=None, applied=0, learners=(),
                 addresses=None):
        """``voters``/``learners``: the configuration as of ``applied`` (the
        state machine's applied index; the host reads it from the state
        machine, or uses the bootstrap members of a new cluster).  CONF
        entries after ``applied`` are read from the log: the newest wins."""
        if rng is None:
            raise ValueError("the core needs an injected random.Random")
        self.id = node_id
        self.config = config or RaftConfig()
        self.rng = rng
        self.log = RaftLog(storage, ClusterConfig(voters, learners, addresses), applied)
        conf_index, conf = self.log.confs.latest()
        self._conf_index = conf_index
        self.tracker = ProgressTracker(conf, self.config.max_inflight, node_id)
        self.peers = tuple(i for i in self.tracker.ids if i != node_id)

        hs = storage.hard_state()
        self.term = hs.term
        self.vote = hs.vote
        last = self.log.last_index()
        # The state machine may have applied past the persisted commit index
        # (commit is persisted lazily; applied entries were committed).
        commit = min(max(hs.commit, applied), last)
        self.log.committed = commit
        self.log.applied = min(applied, commit)
        self._apply_handed = self.log.applied
        self._prev_hs = HardState(hs.term, hs.vote, hs.commit)

        self.role = FOLLOWER
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self.ticks = 0
        self._last_heard = {}

        self._msgs_early = []
        self._msgs = []
        self._read_states = []
        self._pending_bcast = 0
        # Leader-side ReadIndex state (None unless leader).
        self._reads = None
        self._reads_waiting_commit = []
        self._pending_read_round = False
        # Follower-side: read requests to forward, and those forwarded.
        self._follower_reads = []
        self._read_batches = {}  # batch context -> (tick sent, [request contexts])
        self._read_batch_seq = 0
        # Batch contexts must never repeat across restarts of this node: a
        # delayed answer to the previous incarnation's request must not
        # release a newer read with an older index.  The nonce comes from
        # the injected RNG, so each incarnation needs its own seed.
        self._read_nonce = rng.getrandbits(64).to_bytes(8, "big")
        # Learners added by add_voter, promoted once caught up (leader).
        self._auto_promote = set()
        # Leadership transfer: while set, a leader refuses proposals and
        # sends TIMEOUT_NOW once the target's log is complete.
        self.lead_transferee = None
        self._transfer_elapsed = 0
        # Snapshots: peers the host should stream one to (leader), chunks
        # received for the host to spool (follower).
        self._snapshot_requests = []
        self._snapshot_chunks = []
        # A blank node (`is_blank`) remembers the newest (term, index) a
        # leader offered it: the log it votes as if it held.  In memory
        # only: after a restart it refuses votes until a leader calls again.
        self._blank_floor = None
        self._reset_randomized_timeout()

    # ------------------------------------------------------------ status --

    @property
    def promotable(self):
        """Whether this node may campaign: a voter of the configuration in
        force — or of the one before it, while the change removing it is
        not known to be committed.  A removed leader leads until its removal
        commits (thesis §4.2.2); a follower in the same spot may be the one
        with the most up-to-date log, and the others cannot elect anyone
        without it (it counts votes in the new configuration, so winning is
        safe; it steps down once the removal commits).  Learners and nodes
        whose removal is committed never campaign."""
        if self.tracker.is_voter(self.id):
            return True
        if self._conf_index <= self.log.committed:
            return False
        before = self.log.confs.at(self._conf_index - 1)
        return before is not None and self.id in before.voters

    @property
    def membership(self):
        """The configuration in force (the latest in the log)."""
        return self.tracker.config

    @property
    def conf_index(self):
        """Index of the entry that set the configuration in force (its
        base index when no CONF entry is in the log)."""
        return self._conf_index

    @property
    def conf_committed(self):
        """Whether the configuration in force is committed (a leader's
        newest CONF entry may still be lost in a stale term)."""
        return self._conf_index <= self.log.committed

    def conf_at(self, index):
        """The configuration as of ``index`` (for a snapshot's metadata), or
        None when ``index`` precedes what the log still knows."""
        return self.log.confs.at(index)

    def is_blank(self):
        """Joined with no configuration and holds nothing yet (a node
        started to join a running cluster, before its first snapshot)."""
        return not self.tracker.config.voters.voters and self.log.last_index() == 0

    def is_single_voter(self):
        return self.tracker.config.voters.voters == (self.id,)

    def last_contact(self, peer):
        """Ticks since a message from ``peer`` arrived, or None."""
        tick = self._last_heard.get(peer)
        return None if tick is None else self.ticks - tick

    # ------------------------------------------------------------- input --

    def tick(self):
        self.ticks += 1
        if self.role == LEADER:
            self._tick_leader()
        else:
            self._tick_election()
        if self._read_batches:
            self._expire_read_batches()

    def propose(self, data, kind=t.NORMAL):
        """Append a new entry when leader; return its index, or None when
        this node cannot accept proposals (not leader, or transferring).
        Membership changes go through `propose_conf_change`."""
        if self.role != LEADER or self.lead_transferee is not None:
            return None
        if kind != t.NORMAL:
            raise ValueError("propose() takes NORMAL entries; use propose_conf_change")
        index = self.log.last_index() + 1
        self.log.append([Entry(index, self.term, data, kind)])
        self._pending_bcast |= _BCAST_ENTRIES
        return index

    def propose_conf_change(self, kind, node_id, address=None):
        """Append a CONF entry changing one member (`confchange.KINDS`);
        ``address`` is recorded for the host (where that member listens).
        Returns ``(index, None)``, or ``(None, reason)`` where reason is
        the string ``"not leader"``, a `confchange.ConfChangeBusy` (retry
        later) or the `confchange.ConfChangeError` of an invalid change.

        ``add_voter`` of a node that is not a member adds it as a learner
        and promotes it (this leader, automatically) once it has caught up
        (`pending_promotions`): a voter never starts empty, so a quorum
        never depends on a node that has nothing (thesis §4.2.1); the
        returned index is the learner entry's.  ``add_voter`` of a learner
        is ``promote``."""
        if self.role != LEADER or self.lead_transferee is not None:
            return None, "not leader"
        auto = False
        if kind == confchange.ADD_VOTER:
            if node_id in self.tracker.config.learners:
                kind = confchange.PROMOTE
            elif node_id not in self.tracker.config:
                kind, auto = confchange.ADD_LEARNER, True
        index, reason = self._propose_conf(kind, node_id, address)
        if auto and index is not None:
            self._auto_promote.add(node_id)
        return index, reason

    @property
    def pending_promotions(self):
        """Learners this leader promotes once they have caught up."""
        return tuple(sorted(self._auto_promote))

    def _maybe_auto_promote(self):
        for node_id in sorted(self._auto_promote):
            index, reason = self._propose_conf(confchange.PROMOTE, node_id, None)
            if index is not None or isinstance(reason, confchange.ConfChangeError):
                # Promoted, or not caught up yet (try again later)...
                if index is not None:
                    self._auto_promote.discard(node_id)
                continue
            return  # busy: one change at a time

    def _propose_conf(self, kind, node_id, address):
        log = self.log
        # The fix to single-server changes (Ongaro, raft-dev 2015): a new
        # leader must commit an entry of its own term first, or a change
        # it proposes could overlap one from an earlier term that only
        # part of the cluster saw.  It also covers "one change at a time":
        # every earlier CONF entry is committed with that entry.
        if log.term(log.committed) != self.term:
            return None, confchange.ConfChangeBusy(
                "the new leader has not committed an entry of its term yet")
        if self._conf_index > log.committed:
            return None, confchange.ConfChangeBusy("a membership change is in progress")
        config = self.tracker.config
        try:
            new = confchange.apply_change(config, kind, node_id, address)
        except confchange.ConfChangeError as e:
            return None, e
        if kind == confchange.PROMOTE:
            # Caught up: it holds the configuration in force (so everything
            # up to the change that added it) and is close to our last index.
            pr = self.tracker.progress[node_id]
            if pr.match < self._conf_index or log.last_index() - pr.match > self.config.promote_max_lag:
                return None, confchange.ConfChangeError(
                    "learner %s is not caught up (match %d, last index %d)"
                    % (node_id, pr.match, log.last_index()))
        index = log.last_index() + 1
        log.append([Entry(index, self.term, confchange.encode(new, kind, node_id), t.CONF)])
        self._pending_bcast |= _BCAST_ENTRIES
        self._sync_config()
        return index, None

    def transfer_leadership(self, target):
        """Hand leadership to voter ``target``: stop taking proposals, bring
        its log up to date, then TIMEOUT_NOW (thesis §3.10).  Abandoned
        after an election timeout.  Returns None or the reason it cannot
        start; transferring to oneself is a no-op."""
        if self.role != LEADER:
            return "not leader"
        if target == self.id:
            return None
        if not self.tracker.is_voter(target):
            return "%s is not a voter" % (target,)
        self.lead_transferee = target
        self._transfer_elapsed = 0
        if self.tracker.progress[target].match == self.log.last_index():
            self._send(Message(t.TIMEOUT_NOW, target, self.id, self.term))
        else:
            self._replicate_to(target, True)
        return None

    def read_index(self, context):
        """Ask for a linearizable read point.  A `ReadState` with this
        ``context`` will appear in a later Ready (or a rejected one), unless
        the request is lost on the way to the leader (the host times it out).
        Returns False when there is nobody to ask (no leader known)."""
        if self.role == LEADER:
            self._leader_read_index(self.id, context)
            return True
        if self.lead is None:
            return False
        self._follower_reads.append(context)
        return True

    def step(self, m):
        """Process a message from a peer.  The host validated it with
        `check_message` and checked ``m.to``."""
        self._last_heard[m.frm] = self.ticks
        if m.term > self.term:
            if m.type == t.VOTE or m.type == t.PRE_VOTE:
                # §thesis 4.2.3 (with check-quorum: leader lease): a node that
                # heard from a leader within the election timeout ignores
                # vote requests, so a removed or partitioned node cannot
                # depose a healthy leader.
                if (self.config.check_quorum and self.lead is not None
                        and self.election_elapsed < self.config.election_ticks
                        and m.context != t.TRANSFER_CONTEXT):
                    return
            if m.type == t.PRE_VOTE:
                pass  # a pre-vote never changes our term (§thesis 9.6)
            elif m.type == t.PRE_VOTE_RESP and not m.reject:
                pass  # a grant carries the term we would campaign at
            elif m.type in (t.APP, t.HEARTBEAT, t.SNAPSHOT):
                self._become_follower(m.term, m.frm)
            elif m.type == t.VOTE and self.role == FOLLOWER:
                # Figure 2: only hearing from the leader or granting a vote
                # restarts the election timer (`_handle_vote_request` does
                # when it grants).  A rejected candidate with a stale log
                # must not keep the up-to-date nodes from ever timing out.
                elapsed = self.election_elapsed
                self._become_follower(m.term, None)
                self.election_elapsed = elapsed
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if m.type in (t.APP, t.HEARTBEAT, t.SNAPSHOT):
                self._answer_stale_leader(m)
            elif m.type == t.PRE_VOTE:
                self._send(Message(t.PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))
            elif m.type == t.READ_INDEX:
                self._send(Message(t.READ_INDEX_RESP, m.frm, self.id, self.term,
                                   context=m.context, reject=True))
            return

        if m.type == t.VOTE or m.type == t.PRE_VOTE:
            self._handle_vote_request(m)
        elif self.role == LEADER:
            self._step_leader(m)
        elif self.role == FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _answer_stale_leader(self, m):
        """Figure 2: answer a leader of an older term with ours, so it steps
        down.  Always, not only with pre-vote or check-quorum (as
        etcd-io/raft does): with neither, the new term reaches that leader
        only through our vote requests, and a node that missed membership
        changes sends those to the old members only.  It campaigned at ever
        higher terms while the leader it ignored never heard of them
        (simulator seed 21426, 3 nodes)."""
        self._send(Message(t.APP_RESP, m.frm, self.id, self.term))

    # -------------------------------------------------------------- ready --

    def has_ready(self):
        self._flush()
        log = self.log
        if (log.has_unstable() or self._msgs or self._msgs_early or self._read_states
                or self._snapshot_requests or self._snapshot_chunks):
            return True
        if log.committed > self._apply_handed:
            return True
        prev = self._prev_hs
        return prev.term != self.term or prev.vote != self.vote or prev.commit != log.committed

    def ready(self):
        """Hand out the next batch of work; the host must follow the order
        in `Ready`'s docstring, then call `advance`."""
        self._flush()
        rd = Ready()
        log = self.log
        rd.entries = log.take_unstable()
        prev = self._prev_hs
        vote_changed = prev.term != self.term or prev.vote != self.vote
        if vote_changed or prev.commit != log.committed:
            rd.hard_state = self._prev_hs = HardState(self.term, self.vote, log.committed)
        # Commit alone need not be synced: it is recomputed after a restart.
        rd.must_sync = vote_changed or bool(rd.entries)
        if vote_changed:
            # Defensive: nothing leaves before a new term or vote is durable.
            rd.messages = self._msgs_early + self._msgs
        else:
            rd.messages_before_sync = self._msgs_early
            rd.messages = self._msgs
        self._msgs_early = []
        self._msgs = []
        if log.committed > self._apply_handed:
            rd.committed_entries = log.entries(
                self._apply_handed + 1, log.committed + 1,
                self.config.max_msg_bytes * self.config.apply_batch_factor)
            self._apply_handed = rd.committed_entries[-1].index
        rd.read_states = self._read_states
        self._read_states = []
        if self._snapshot_requests:
            rd.snapshot_requests = self._snapshot_requests
            self._snapshot_requests = []
        if self._snapshot_chunks:
            rd.snapshot_chunks = self._snapshot_chunks
            self._snapshot_chunks = []
        return rd

    def advance(self, rd):
        """The host persisted, sent and applied ``rd``."""
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role == LEADER and self.log.term(last.index) == last.term:
                # The leader counts its own copy only once it is durable.
                self.tracker.progress[self.id].maybe_update(last.index)
                if self._maybe_commit():
                    self._pending_bcast |= _BCAST_COMMIT
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
            # Applied configurations are never truncated: fold them so the
            # history stays short.
            self.log.confs.fold_to(self.log.applied)

    def _flush(self):
        """Turn work batched since the last Ready into messages: one
        AppendEntries per follower for all proposals of a host turn, one
        heartbeat round for all reads, one READ_INDEX for a follower's reads."""
        if self.role == LEADER:
            if self._auto_promote and self.lead_transferee is None:
                self._maybe_auto_promote()
            if self._pending_bcast:
                send_if_empty = self._pending_bcast >= _BCAST_COMMIT
                self._pending_bcast = 0
                for peer in self.peers:
                    self._replicate_to(peer, send_if_empty)
            if self._pending_read_round:
                self._pending_read_round = False
                self._bcast_heartbeat()
        elif self._follower_reads and self.lead is not None:
            self._read_batch_seq += 1
            ctx = self._read_nonce + self._read_batch_seq.to_bytes(8, "big")
            self._read_batches[ctx] = (self.ticks, self.lead, self._follower_reads)
            self._follower_reads = []
            self._send(Message(t.READ_INDEX, self.lead, self.id, self.term, context=ctx))

    # ----------------------------------------------------------- elections --

    def _reset_randomized_timeout(self):
        n = self.config.election_ticks
        self.randomized_election_timeout = n + self.rng.randrange(n)

    def _tick_election(self):
        self.election_elapsed += 1
        if not self.promotable:
            return
        # A single voter needs nobody's vote: it elects itself at once, so a
        # one-node cluster serves from its first tick.
        if self.is_single_voter() or self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._campaign(pre=self.config.pre_vote)

    def _tick_leader(self):
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        cfg = self.config
        if self.lead_transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= cfg.election_ticks:
                # The target did not take over in an election timeout
                # (down, partitioned, too far behind): serve again.
                self.lead_transferee = None
        if self.election_elapsed >= cfg.election_ticks:
            self.election_elapsed = 0
            if cfg.check_quorum:
                # §thesis 6.2: a leader that cannot reach a quorum steps down
                # (its clients then retry elsewhere instead of hanging).
                progress = self.tracker.progress
                progress[self.id].recent_active = True
                if not self.tracker.quorum_active():
                    self._become_follower(self.term, None)
                    return
                for node_id in self.peers:
                    progress[node_id].recent_active = False
        if self.heartbeat_elapsed >= cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            for peer in self.peers:
                self.tracker.progress[peer].answered = False
            self._bcast_heartbeat()

    def campaign(self):
        """Start an election now (tests)."""
        if self.role != LEADER and self.promotable:
            self._campaign(pre=self.config.pre_vote)

    def _campaign(self, pre, transfer=False):
        if pre:
            # §thesis 9.6 pre-vote: ask first whether we could win, without
            # bumping the term; only a likely winner disrupts the cluster.
            self._become_pre_candidate()
            vote_type, term = t.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = t.VOTE, self.term
        self.tracker.record_vote(self.id, True)
        if self.tracker.tally_votes() == VOTE_WON:
            # single voter
            if pre:
                self._campaign(pre=False)
            else:
                self._become_leader()
            return
        last = self.log.last_index()
        last_term = self.log.term(last)
        # A campaign ordered by the leader (TIMEOUT_NOW) says so, so that
        # voters grant despite having heard from that leader recently.
        context = t.TRANSFER_CONTEXT if transfer else b""
        for peer in self.peers:
            if self.tracker.is_voter(peer):
                self._send(Message(vote_type, peer, self.id, term, log_term=last_term, index=last,
                                   context=context))

    def _handle_vote_request(self, m):
        # §5.2, §5.4.1: one vote per term, only for a log at least as up to
        # date as ours.  A pre-vote for a future term is granted on the log
        # check alone (we have not voted in that term yet).
        pre = m.type == t.PRE_VOTE
        can_vote = (self.vote == m.frm
                    or (self.vote is None and self.lead is None)
                    or (pre and m.term > self.term))
        if self.is_blank():
            # A node that joins with nothing may be a wiped machine under the
            # id of a former member: a candidate holding a stale
            # configuration would count it as that member, whose log (and
            # the committed entries in it) is gone.  Until it holds a
            # snapshot, it votes as if its log were the prefix of a leader's
            # log it has been offered (`_blank_floor`), or not at all.
            floor = self._blank_floor
            if floor is None or not (m.log_term > floor[0]
                                     or (m.log_term == floor[0] and m.index >= floor[1])):
                can_vote = False
        resp_type = t.PRE_VOTE_RESP if pre else t.VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # The response carries the candidate's term, so a pre-candidate
            # can tell it apart from a stale answer.
            self._send(Message(resp_type, m.frm, self.id, m.term))
            if not pre:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp_type, m.frm, self.id, self.term, reject=True))

    def _handle_vote_response(self, m):
        self.tracker.record_vote(m.frm, not m.reject)
        result = self.tracker.tally_votes()
        if result == VOTE_WON:
            if self.role == PRE_CANDIDATE:
                self._campaign(pre=False)
            else:
                self._become_leader()
        elif result == VOTE_LOST:
            self._become_follower(self.term, None)

    # ------------------------------------------------------ role changes --

    def _reset(self, term):
        if term != self.term:
            self.term = term
            self.vote = None
        self._set_leader(None)
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.tracker.reset_votes()
        self._pending_bcast = 0
        self._pending_read_round = False
        self.lead_transferee = None
        self._snapshot_requests = []
        self._auto_promote = set()
        if self._reads is not None or self._reads_waiting_commit:
            self._fail_leader_reads()

    def _become_follower(self, term, lead):
        self._reset(term)
        self.role = FOLLOWER
        self._set_leader(lead)

    def _become_pre_candidate(self):
        # Unlike a candidate, a pre-candidate keeps its term and vote.
        self.tracker.reset_votes()
        self._set_leader(None)
        self._pending_bcast = 0
        self.role = PRE_CANDIDATE

    def _become_candidate(self):
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = CANDIDATE

    def _become_leader(self):
        self._reset(self.term)
        self.role = LEADER
        self._set_leader(self.id)
        log = self.log
        self.tracker.reset(log.last_index() + 1)
        me = self.tracker.progress[self.id]
        me.match = log.stable_last_index()
        me.become_replicate()
        me.recent_active = True
        self._reads = ReadIndexQueue(self.id)
        # §5.4.2 / §8: an entry of the new term, so that earlier entries can
        # be committed (by counting it) and ReadIndex can start.
        log.append([Entry(log.last_index() + 1, self.term)])
        self._pending_bcast |= _BCAST_ENTRIES

    def _set_leader(self, lead):
        if lead != self.lead:
            self.lead = lead
            # Reads forwarded to the old leader will never be answered by
            # the new one: settle them now so the host can retry.
            if self._read_batches or self._follower_reads:
                self._fail_follower_reads()

    # ------------------------------------------------------------ leader --

    def _step_leader(self, m):
        pr = self.tracker.get(m.frm)
        if m.type == t.APP_RESP:
            if pr is not None:
                self._handle_append_response(m, pr)
        elif m.type == t.HEARTBEAT_RESP:
            if pr is not None:
                self._handle_heartbeat_response(m, pr)
        elif m.type == t.READ_INDEX:
            self._leader_read_index(m.frm, m.context)
        elif m.type == t.SNAPSHOT_RESP:
            if pr is not None:
                pr.recent_active = True
                if m.reject and m.index == 0:
                    # A joining node with an empty log asks for a snapshot
                    # rather than the log from its first entry.
                    if pr.state != SNAPSHOT:
                        pr.become_snapshot(0)
                        self._snapshot_requests.append(m.frm)
                elif m.reject and pr.state == SNAPSHOT:
                    # The follower lost the transfer (restarted, bad data):
                    # probe again; the next heartbeat answer asks the host
                    # for a fresh snapshot.
                    pr.pending_snapshot = 0
                    pr.become_probe()
        # Everything else in our own term is stale.

    def _handle_append_response(self, m, pr):
        pr.recent_active = True
        pr.answered = True
        if m.reject:
            # §5.3 with the fast-backtracking optimisation: the follower
            # told us (hint_term, reject_hint) where its log may match; skip
            # every index whose term rules it out in one round trip.
            next_probe = m.reject_hint
            if m.hint_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(
                    min(m.reject_hint, self.log.last_index()), m.hint_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self._replicate_to(m.frm, True)
            return
        if m.index > self.log.last_index():
            return  # acknowledges entries we never sent: ignore
        # A probe answered at exactly our match also proves where the logs
        # match (e.g. an empty probe to a caught-up follower).
        if pr.maybe_update(m.index) or (pr.state == PROBE and pr.match == m.index):
            if pr.state == PROBE:
                pr.become_replicate()
            elif pr.state == REPLICATE:
                pr.inflights.free_le(m.index)
            elif pr.match + 1 >= self.log.first_index():
                # SNAPSHOT: the follower installed it (or its log turned out
                # to match): plain replication can go on from there.
                pr.become_probe()
                pr.become_replicate()
            if m.frm == self.lead_transferee and pr.match == self.log.last_index():
                self._send(Message(t.TIMEOUT_NOW, m.frm, self.id, self.term))
            if self._maybe_commit():
                self._pending_bcast |= _BCAST_COMMIT
            elif self.role == LEADER:
                # The tail held back while this answer was due goes now,
                # and so does a commit index the peer has not been sent
                # (the other follower's answer may have committed it).
                self._replicate_to(m.frm, pr.sent_commit < self.log.committed)

    def _handle_heartbeat_response(self, m, pr):
        pr.recent_active = True
        pr.probe_sent = False
        if pr.match < self.log.last_index() or pr.state == PROBE:
            if pr.state == REPLICATE and pr.inflights.count():
                # The peer answers heartbeats but no AppendEntries since the
                # last heartbeat tick: the window's messages may have been
                # lost (a dropped connection), and tail batching and a full
                # window send nothing more until an answer comes.  An empty
                # AppendEntries at `next` settles it: acknowledged (the
                # window frees) or rejected (back to probing).  At most one
                # per tick: read rounds bring many heartbeat answers.  (An
                # older answer arriving after the tick defers it a tick.)
                if not pr.answered:
                    pr.answered = True
                    self._send_window_probe(m.frm, pr)
            else:
                self._replicate_to(m.frm, True)
        if m.context and self._reads is not None and self._reads.ack(m.frm, m.context):
            self._release_reads()

    def _maybe_commit(self):
        # §5.4.2 (Figure 8): only an entry of the current term is committed
        # by counting replicas; earlier ones are committed with it.
        index = self.tracker.committed()
        log = self.log
        if index > log.committed and log.term(index) == self.term:
            first_of_term = log.term(log.committed) != self.term
            log.commit_to(index)
            if first_of_term and self._reads_waiting_commit:
                waiting = self._reads_waiting_commit
                self._reads_waiting_commit = []
                for requester, context in waiting:
                    self._leader_read_index(requester, context)
            if not self.promotable and log.committed >= self._conf_index:
                self._step_down_removed()
            return True
        return False

    def _step_down_removed(self):
        """Thesis §4.2.2: a leader removed from the configuration leads
        until that configuration is committed, then steps down.  It hands
        over first (TIMEOUT_NOW to the voter with the most of its log), so
        the cluster need not wait for an election timeout."""
        progress = self.tracker.progress
        best = None
        for voter in self.tracker.config.voters.voters:
            if voter != self.id and (best is None or progress[voter].match > progress[best].match):
                best = voter
        if best is not None and progress[best].match > 0:
            self._send(Message(t.TIMEOUT_NOW, best, self.id, self.term))
        self._become_follower(self.term, None)

    def _replicate_to(self, to, send_if_empty):
        """Send ``to`` what it is missing: in replicate state as many
        messages as the inflight window allows, in probe state one."""
        if self._send_append(to, send_if_empty):
            while self._send_append(to, False):
                pass

    def _send_append(self, to, send_if_empty):
        """Send ``to`` one AppendEntries from its ``next``; False when
        nothing went out.

        Tail batching (our choice; etcd-io/raft streams every batch): in
        replicate state, a message that would carry the *tail* of the log
        (all that is left to send fits in it, ``max_msg_bytes``) waits
        while an earlier one is unanswered; commit-only news waits with it.  The
        answer sends everything that piled up meanwhile in one message
        (`_handle_append_response`).  Under load a follower then gets one
        AppendEntries, one fsync and one answer per round trip instead of
        one per leader turn: on 3 nodes at 64 writes in flight, 84-88
        instead of 97-117 µs of CPU per write, with more throughput and a
        lower p99 (docs/PERFORMANCE.md).  Full messages (a follower
        catching up) still stream up to ``max_inflight``.  A lost message
        cannot stall the peer: `_handle_heartbeat_response`.
        """
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        prev_term = log.term(prev)
        last = log.last_index()
        waiting = pr.state == REPLICATE and pr.inflights.count()
        if waiting and (prev_term is None or pr.next > last):
            # Nothing new, or compacted past what is in flight: the answer
            # (or its absence, see the heartbeat answer) decides.
            return False
        if prev_term is None:
            # The entries this peer needs are compacted away: the host
            # streams it a snapshot (InstallSnapshot); until the peer's log
            # matches again, only heartbeats go out.
            pr.become_snapshot(0)
            self._snapshot_requests.append(to)
            return False
        if pr.next <= last:
            entries = log.entries(pr.next, last + 1, self.config.max_msg_bytes)
            if waiting and entries[-1].index == last:
                return False  # the tail: waits for the answer in flight
        elif not send_if_empty:
            return False
        else:
            entries = []
        pr.sent_commit = log.committed
        self._send(Message(t.APP, to, self.id, self.term, log_term=prev_term, index=prev,
                           entries=entries, commit=log.committed))
        pr.sent_entries(entries[-1].index if entries else prev)
        return True

    def _send_window_probe(self, to, pr):
        self._send(Message(t.APP, to, self.id, self.term,
                           log_term=self.log.term(pr.next - 1) or 0,
                           index=pr.next - 1,
                           commit=min(pr.match, self.log.committed)))

    def _bcast_heartbeat(self):
        reads = self._reads
        context = reads.round_context() if reads is not None and len(reads) else b""
        committed = self.log.committed
        progress = self.tracker.progress
        for peer in self.peers:
            # A follower may not yet hold our entries up to `committed`;
            # min(match, commit) never points it past what matches.
            self._send(Message(t.HEARTBEAT, peer, self.id, self.term,
                               commit=min(progress[peer].match, committed), context=context))

    # ---------------------------------------------------------- ReadIndex --

    def _leader_read_index(self, requester, context):
        # §thesis 6.4: the read index is our commit index, but only once an
        # entry of our term is committed (before that our commit index may
        # be behind the previous leader's).
        log = self.log
        if log.term(log.committed) != self.term:
            self._reads_waiting_commit.append((requester, context))
            return
        self._reads.add(log.committed, requester, context)
        if self.peers:
            self._pending_read_round = True
        self._release_reads()

    def _release_reads(self):
        for r in self._reads.release(self.tracker.config.voters):
            if r.requester == self.id:
                self._read_states.append(ReadState(r.index, r.context))
            else:
                self._send(Message(t.READ_INDEX_RESP, r.requester, self.id, self.term,
                                   index=r.index, context=r.context))

    def _fail_leader_reads(self):
        pending = [(r.requester, r.context) for r in self._reads.clear()] if self._reads else []
        pending.extend(self._reads_waiting_commit)
        self._reads = None
        self._reads_waiting_commit = []
        for requester, context in pending:
            if requester == self.id:
                self._read_states.append(ReadState(0, context, rejected=True))
            else:
                self._send(Message(t.READ_INDEX_RESP, requester, self.id, self.term,
                                   context=context, reject=True))

    def _handle_read_index_response(self, m):
        batch = self._read_batches.get(m.context)
        if batch is None or batch[1] != m.frm:
            return
        del self._read_batches[m.context]
        for context in batch[2]:
            self._read_states.append(ReadState(m.index, context, rejected=m.reject))

    def _fail_follower_reads(self):
        for _, _, contexts in self._read_batches.values():
            for context in contexts:
                self._read_states.append(ReadState(0, context, rejected=True))
        for context in self._follower_reads:
            self._read_states.append(ReadState(0, context, rejected=True))
        self._read_batches = {}
        self._follower_reads = []

    def _expire_read_batches(self):
        horizon = self.ticks - self.config.election_ticks
        expired = [ctx for ctx, batch in self._read_batches.items() if batch[0] <= horizon]
        for ctx in expired:
            for context in self._read_batches.pop(ctx)[2]:
                self._read_states.append(ReadState(0, context, rejected=True))

    # ---------------------------------------------- follower / candidate --

    def _step_follower(self, m):
        if m.type == t.APP:
            self.election_elapsed = 0
            self._set_leader(m.frm)
            self._handle_append(m)
        elif m.type == t.HEARTBEAT:
            self.election_elapsed = 0
            self._set_leader(m.frm)
            self._handle_heartbeat(m)
        elif m.type == t.READ_INDEX_RESP:
            self._handle_read_index_response(m)
        elif m.type == t.READ_INDEX:
            # Not the leader (any more): the asker will retry elsewhere.
            self._send(Message(t.READ_INDEX_RESP, m.frm, self.id, self.term,
                               context=m.context, reject=True))
        elif m.type == t.SNAPSHOT:
            self.election_elapsed = 0
            self._set_leader(m.frm)
            self._handle_snapshot(m)
        elif m.type == t.TIMEOUT_NOW:
            # Thesis §3.10: the leader hands over; campaign now, skipping
            # pre-vote (the leader itself asked), if we may campaign at all.
            if self.promotable:
                self._campaign(pre=False, transfer=True)

    def _step_candidate(self, m):
        if m.type in (t.APP, t.HEARTBEAT, t.SNAPSHOT):
            # §5.2: a leader of our term exists; stand down.
            self._become_follower(self.term, m.frm)
            self._step_follower(m)
        elif m.type == t.VOTE_RESP:
            if self.role == CANDIDATE:
                self._handle_vote_response(m)
        elif m.type == t.PRE_VOTE_RESP:
            if self.role == PRE_CANDIDATE:
                self._handle_vote_response(m)
        elif m.type == t.READ_INDEX:
            self._send(Message(t.READ_INDEX_RESP, m.frm, self.id, self.term,
                               context=m.context, reject=True))

    def _handle_append(self, m):
        log = self.log
        if m.commit > 0 and self.is_blank():
            # Joining with nothing: start from a snapshot of the leader's
            # state (at its applied index, which covers every entry committed
            # before this node was added), never from a prefix of the log
            # that may predate the removal of a former member of our id.
            self._raise_blank_floor(m.log_term, m.index)
            self._send(Message(t.SNAPSHOT_RESP, m.frm, self.id, self.term, reject=True))
            return
        if m.index < log.committed:
            # Everything up to our commit index matches any leader's log.
            self._send(Message(t.APP_RESP, m.frm, self.id, self.term, index=log.committed))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            if m.entries:
                self._sync_config()
            self._send(Message(t.APP_RESP, m.frm, self.id, self.term, index=last_new))
            return
        # §5.3 log-matching check failed.  Hint the leader at the largest
        # index whose term could still match (fast backtracking, as in
        # etcd-io/raft): every entry of ours after it has a term > the
        # leader's term at m.index, so it cannot match.
        hint_index = min(m.index, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
        self._send(Message(t.APP_RESP, m.frm, self.id, self.term, index=m.index, reject=True,
                           reject_hint=hint_index, hint_term=hint_term))

    def note_blank_floor(self, term, index):
        """The host remembers that a leader offered a snapshot at
        ``(index, term)`` (from before a restart): a blank node votes as if
        it held a log up to there."""
        if self.is_blank():
            self._raise_blank_floor(term, index)

    def _raise_blank_floor(self, term, index):
        floor = self._blank_floor
        if floor is None or (term, index) > floor:
            self._blank_floor = (term, index)

    def _handle_snapshot(self, m):
        log = self.log
        if self.is_blank():
            self._raise_blank_floor(m.log_term, m.index)
        if m.index <= log.committed:
            # We have all of it already: tell the leader where we match.
            self._send(Message(t.APP_RESP, m.frm, self.id, self.term, index=log.committed))
            return
        if log.match_term(m.index, m.log_term):
            # Our log holds the snapshot's last entry: it matches the
            # leader's up to there (and that entry is committed).
            log.commit_to(m.index)
            self._send(Message(t.APP_RESP, m.frm, self.id, self.term, index=m.index))
            return
        self._snapshot_chunks.append(m)

    # -------------------------------------------------- snapshot host API --

    def snapshot_sending(self, peer, index):
        """The host started streaming ``peer`` a snapshot at ``index``."""
        pr = self.tracker.get(peer)
        if pr is not None and pr.state == SNAPSHOT and self.role == LEADER:
            pr.pending_snapshot = index

    def snapshot_failed(self, peer):
        """The host could not make or deliver a snapshot to ``peer``: probe
        again (a later heartbeat answer asks for a new one)."""
        pr = self.tracker.get(peer)
        if pr is not None and pr.state == SNAPSHOT:
            pr.pending_snapshot = 0
            pr.become_probe()

    def can_restore(self, index, term):
        """Whether a received snapshot at ``(index, term)`` should replace
        the log: it must be newer than what we have committed, and our log
        must not already hold its last entry (then we keep the log)."""
        return (self.role == FOLLOWER and index > self.log.committed
                and not self.log.match_term(index, term))

    def restore(self, meta, leader):
        """The host installed the snapshot ``meta`` (a `SnapshotMeta`) from
        ``leader``: the state machine holds it and the `IRaftLog` was reset
        to ``(meta.index, meta.term)`` and synced.  Acknowledge it like an
        AppendEntries that matched there."""
        if meta.index <= self.log.committed:
            # Never roll back what is committed (the host checked
            # `can_restore` before touching the state machine).
            raise LogInvariantError("restore of %r over commit %d" % (meta, self.log.committed))
        self.log.restore(meta.index, meta.term, meta.config)
        self._apply_handed = meta.index
        self._sync_config()
        self._send(Message(t.APP_RESP, leader, self.id, self.term, index=meta.index))

    def snapshot_meta(self, index):
        """The `SnapshotMeta` of a snapshot of the state machine at applied
        ``index``, or None when the log no longer knows that index's term
        or configuration (the host then waits for a later one)."""
        term = self.log.term(index)
        config = self.conf_at(index)
        if term is None or config is None:
            return None
        return SnapshotMeta(index, term, config)

    # ------------------------------------------------------ membership --

    def _sync_config(self):
        """Make the configuration in force the latest one in the log
        (thesis §4.1: used as soon as it is appended, committed or not;
        a truncated CONF entry takes its configuration with it)."""
        index, config = self.log.confs.latest()
        self._conf_index = index
        if config == self.tracker.config:
            return
        self.tracker.set_config(config, self.log.last_index() + 1)
        self.peers = tuple(i for i in self.tracker.ids if i != self.id)
        if self.lead_transferee is not None and self.lead_transferee not in config.voters:
            self.lead_transferee = None
        self._auto_promote &= set(config.learners)
        if self.role == LEADER:
            # New members are probed; a removed leader steps down once the
            # change is committed (`_maybe_commit`).
            self._pending_bcast |= _BCAST_ENTRIES
        elif self.role != FOLLOWER and not self.promotable:
            self._become_follower(self.term, None)

    def _handle_heartbeat(self, m):
        self.log.commit_to(m.commit)
        self._send(Message(t.HEARTBEAT_RESP, m.frm, self.id, self.term, context=m.context))

    # ---------------------------------------------------------- plumbing --

    def _send(self, m):
        if m.type in _EARLY_TYPES:
            self._msgs_early.append(m)
        else:
            self._msgs.append(m)

    def status(self):
        log = self.log
        progress = self.tracker.progress
        peers = {}
        for peer in self.peers:
            pr = progress[peer]
            leader = self.role == LEADER
            peers[peer] = {
                "match_index": pr.match if leader else 0,
                "next_index": pr.next if leader else 0,
                "last_contact_ticks": self.last_contact(peer),
                "state": pr.state if leader else "",
            }
        storage = log.storage
        config = self.tracker.config
        for peer in self.peers:
            pr = progress[peer]
            peers[peer]["role"] = "learner" if peer in config.learners else "voter"
            peers[peer]["snapshot_index"] = pr.pending_snapshot if self.role == LEADER else 0
        return {
            "id": self.id,
            "role": self.role,
            "term": self.term,
            "leader": self.lead,
            "commit_index": log.committed,
            "applied_index": log.applied,
            "log_first_index": storage.first_index(),
            "log_last_index": log.last_index(),
            "snapshot_index": storage.first_index() - 1,
            "voters": list(config.voters.voters),
            "learners": list(config.learners),
            "conf_index": self._conf_index,
            "conf_pending": self._conf_index > log.committed,
            "lead_transferee": self.lead_transferee,
            "peers": peers,
        }
