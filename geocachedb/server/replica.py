"""The host loop around the Raft core: the one module that turns the core's
`Ready` batches into disk writes, network sends, state-machine applies and
client callbacks.

Both the Twisted node and the simulator run exactly this code; they differ
only in what sits behind its three seams: the `IRaftLog` (a durable WAL or
an in-memory log that loses unsynced writes), the `IPeerTransport` (TCP
connections or the simulated network) and the clock (whoever calls `tick`).

Data flow of one `process()` round, for each Ready (see `Ready`):
send the leader's early messages -> append entries, set hard state, one
`sync()` (group commit: every proposal of the batch shares it) -> send the
messages that depend on the sync -> apply committed entries in one storage
batch -> complete the proposals and reads they unblock -> snapshots (start
streaming to followers that need one; spool and install received chunks)
-> `core.advance` -> compact the log when it has grown past
``snapshot_entries``.

Cluster operations live here too, on top of the core's rules: membership
changes (`propose_conf_change`, `members`), leadership transfer
(`transfer_leadership`), log compaction (automatic, or `compact`) and the
I/O of InstallSnapshot (`geocachedb.snapshots`).
"""

import heapq
import logging

from geocachedb import errors
from geocachedb.raft import confchange
from geocachedb.raft import types as t
from geocachedb.raft.core import RaftCore, check_message, snapshot_chunk, snapshot_flags
from geocachedb.raft.types import CONF, LEADER, Message, RaftConfig, SnapshotMeta
from geocachedb.server.deadlines import Deadlines
from geocachedb.snapshots import MemorySnapshotStore, OutgoingSnapshot
from geocachedb.storage.snapshot import SnapshotReader

log = logging.getLogger("geocachedb.server")


class _Incoming:
    """The snapshot a follower is receiving."""

    __slots__ = ("leader", "term", "meta", "offset")

    def __init__(self, leader, term, meta):
        self.leader = leader
        self.term = term
        self.meta = meta
        self.offset = 0


class Replica:
    def __init__(self, node_id, voters, log, transport, state_machine, rng, config=None,
                 snapshot_store=None, learners=(), addresses=None, deadlines=None):
        """``voters``/``learners`` bootstrap a new cluster; once the state
        machine has applied a CONF entry (or installed a snapshot) the
        configuration comes from there and from the log, and these are
        ignored (so is ``addresses``, member id -> peer address, which the
        first membership change records for every member).  A node joining an existing cluster passes no voters: it
        waits to hear from the leader.  ``snapshot_store`` spools incoming
        snapshots (`geocachedb.snapshots`; default: in memory, which loses a
        finished-but-uninstalled snapshot in a crash, so a node passes a
        `FileSnapshotStore`).  ``deadlines``: the server layer's clock and
        timeouts (`geocachedb.server.deadlines`), which `tick` advances; the
        replica's own waiters (reads, promotions) are on it too."""
        self.config = config or RaftConfig()
        self._log = log
        self._transport = transport
        self._sm = state_machine
        self._store = snapshot_store if snapshot_store is not None else MemorySnapshotStore()
        # A partial spool is worthless to a new incarnation (the leader
        # starts over: `_incoming` is empty); a finished one may still need
        # installing.
        # Index of an installed snapshot whose spooled copy is kept until the
        # storage's copy is known durable (None: nothing to release).
        self._release_at = None
        completed = self._store.completed()
        if completed is not None:
            self._finish_install(completed)
        if state_machine.applied_index > log.last_index():
            # Only an interrupted snapshot install leaves the state machine
            # ahead of the log, and `_finish_install` repairs that when the
            # spool survived.  Without it the term of the applied index is
            # unknown: refuse to start rather than re-apply old entries.
            raise RuntimeError(
                "the state machine (applied index %d) is ahead of the Raft log (last index %d) "
                "and no completed snapshot is spooled: wipe this node's data and re-add it"
                % (state_machine.applied_index, log.last_index()))
        stored = state_machine.configuration()
        if stored is not None:
            base = confchange.decode(stored)
            voters, learners, addresses = base.voters.voters, base.learners, base.addresses
        self.core = RaftCore(node_id, voters, log, self.config, rng,
                             applied=state_machine.applied_index, learners=learners,
                             addresses=addresses)
        partial = self._store.incoming()
        if partial is not None:
            # A leader offered this snapshot: a node that joined with
            # nothing may vote as if it held the leader's log up to there.
            self.core.note_blank_floor(partial.term, partial.index)
        self.deadlines = deadlines if deadlines is not None else Deadlines()
        # Compaction never passes an index whose storage batch might still
        # be undone by an OS crash (LMDB without meta sync loses at most its
        # last batch): the index applied before the latest batch.
        self._durable_applied = log.first_index() - 1
        self._last_batch_end = state_machine.applied_index
        # peer -> OutgoingSnapshot (leader); the snapshot being received
        self._senders = {}
        self._incoming = None
        self._transfer = None  # (target, callback, deadline tick, term)
        # add_voter of a new node: node -> callback, fired when its
        # promotion is applied (the core promotes it: the one promotion path)
        self.promote_timeout_ticks = 20 * self.config.election_ticks
        self._promotions = self.deadlines.queue(self.promote_timeout_ticks, self._promotion_expired)
        # index -> (term, callback) of proposals made here as leader
        self._proposals = {}
        self._seen_role_term = (self.core.role, self.core.term)
        # read context -> [callback, confirmed], until it is served or times
        # out (``election_ticks``); confirmed ones also sit in the heap
        # ``_reads_confirmed`` of (read index, seq, context), waiting for the
        # state machine to catch up
        self._reads = self.deadlines.queue(self.config.election_ticks, self._read_expired)
        self._reads_confirmed = []
        self._read_seq = 0
        self._processing = False
        # The host's view of every applied batch: ``on_apply(entries,
        # results)`` (the node answers its followers' forwarded writes).
        self.on_apply = None

    # ------------------------------------------------------ introspection --

    @property
    def node_id(self):
        return self.core.id

    @property
    def role(self):
        return self.core.role

    @property
    def term(self):
        return self.core.term

    @property
    def leader_id(self):
        return self.core.lead

    @property
    def commit_index(self):
        return self.core.log.committed

    @property
    def applied_index(self):
        return self.core.log.applied

    @property
    def is_member(self):
        """False once this node has been removed (or has not joined yet)."""
        return self.core.id in self.core.membership

    def members(self):
        """``[(node_id, 'voter'|'learner')]``: the configuration in force
        here (the newest in this node's log, possibly not yet committed)."""
        return confchange.members(self.core.membership)

    def conf_committed(self):
        """Whether `members()` is committed: only then does it say what
        the cluster has agreed."""
        return self.core.conf_committed

    def addresses(self):
        """``{node_id: address}`` recorded in the configuration in force
        (those given to `propose_conf_change` or at bootstrap)."""
        return dict(self.core.membership.addresses)

    def status(self):
        """The core's status (see `RaftCore.status`: role, term, leader,
        indexes, ``voters``, ``learners``, ``conf_index``, ``conf_pending``,
        ``lead_transferee``, per-peer progress with ``role`` and
        ``snapshot_index``) plus ``snapshots_sending`` (peer -> {index,
        offset}) and ``snapshot_receiving`` ({leader, index, offset} or
        None)."""
        s = self.core.status()
        s["snapshots_sending"] = {
            peer: {"index": o.meta.index, "offset": o.offset} for peer, o in self._senders.items()}
        inc = self._incoming
        s["snapshot_receiving"] = None if inc is None else {
            "leader": inc.leader, "index": inc.meta.index, "offset": inc.offset}
        return s

    # ------------------------------------------------------------- inputs --

    def tick(self):
        """One tick of the server layer's clock: the core's timers, then
        every timeout due (`Deadlines.tick`)."""
        self.core.tick()
        self._check_leadership()
        self.deadlines.tick()
        if self._senders:
            self._tick_senders()

    def _promotion_expired(self, node_id, callback):
        self._call(callback, None, errors.Unavailable(
            "%s was added as a learner but has not caught up yet; "
            "it is promoted when it does" % node_id))

    def _read_expired(self, context, pending):
        callback, confirmed = pending
        self._call(callback, None, errors.Unavailable(
            "read index not applied in time" if confirmed else "read not confirmed in time"))

    def receive(self, message):
        """Step a message from a peer.  Returns False (and drops it) when it
        is malformed or not for us.  Senders outside the configuration are
        not refused here: a node that was just added must hear from the
        leader before it knows the configuration, and a voter must hear a
        candidate its log does not list yet (authenticating peers is the
        transport's job)."""
        try:
            check_message(message)
        except ValueError:
            return False
        if message.to != self.core.id or message.frm == self.core.id:
            return False
        self.core.step(message)
        if message.type == t.SNAPSHOT_RESP and self._senders:
            self._snapshot_acked(message)
        self._check_leadership()
        return True

    def propose(self, data, callback):
        """Replicate ``data`` (an encoded Command); ``callback(result, error)``
        fires exactly once (see the module docs of `geocachedb.server.replica`)."""
        index = self.core.propose(data)
        if index is None:
            callback(None, errors.NotLeader(leader_id=self.core.lead or ""))
            return
        self._proposals[index] = (self.core.term, callback)

    def read_barrier(self, callback):
        """``callback(None, None)`` once a linearizable read may be served
        from the local state machine.  Errors: `NotLeader` with an empty
        ``leader_id`` at once when no leader is known; `Unavailable` when
        the leader rejects or loses the read, or it is not settled within
        ``election_ticks`` ticks."""
        self._read_seq += 1
        context = self._read_seq.to_bytes(8, "big")
        if not self.core.read_index(context):
            # NotLeader with no hint, like `propose`: the host may wait for
            # an election and retry.
            callback(None, errors.NotLeader("no leader known", leader_id=""))
            return
        self._reads.add(context, [callback, False])

    def propose_conf_change(self, kind, node_id, callback, address=None):
        """Change the membership by one node: ``kind`` is ``add_voter``,
        ``add_learner``, ``promote`` (a caught-up learner becomes a voter)
        or ``remove``; ``address`` (where the node listens) is recorded in
        the configuration.  ``callback(members, None)`` once the change is
        applied here (``members`` as `members()` returns it after the
        change); `NotLeader` on a follower; `Unavailable` when another
        change is in progress, a new leader has not committed an entry of
        its term yet, or leadership is lost before the change commits;
        `InvalidArgument` for a change that makes no sense (adding a member,
        promoting a voter, removing the last voter, a learner that is not
        caught up).

        ``add_voter`` of a new node adds it as a learner and promotes it
        once it has caught up (`RaftCore.propose_conf_change`): the callback
        fires when the promotion is applied, or with `Unavailable` when this
        node loses leadership first or the learner has not caught up within
        ``promote_timeout_ticks`` (it stays a learner; this leader still
        promotes it when it catches up)."""
        core = self.core
        auto = kind == confchange.ADD_VOTER and node_id not in core.membership
        index, reason = core.propose_conf_change(kind, node_id, address)
        if index is not None and auto:
            self._promotions.add(node_id, callback)
            return
        if index is None:
            if isinstance(reason, confchange.ConfChangeBusy):
                error = errors.Unavailable(str(reason))
            elif isinstance(reason, confchange.ConfChangeError):
                error = errors.InvalidArgument(str(reason))
            else:
                error = errors.NotLeader(leader_id=self.core.lead or "")
            callback(None, error)
            return
        self._proposals[index] = (self.core.term, callback)

    def transfer_leadership(self, target, callback):
        """Hand leadership to voter ``target`` (thesis §3.10): this leader
        stops accepting proposals, brings the target's log up to date and
        tells it to campaign at once.  ``callback(None, None)`` when this
        node sees ``target`` lead; `Unavailable` when the transfer is
        abandoned (not done within an election timeout) or someone else
        won; `NotLeader` on a follower; `InvalidArgument` when ``target`` is
        not a voter.  Transferring to oneself succeeds at once."""
        core = self.core
        if core.role != LEADER:
            callback(None, errors.NotLeader(leader_id=core.lead or ""))
            return
        if target == core.id:
            callback(None, None)
            return
        reason = core.transfer_leadership(target)
        if reason is not None:
            callback(None, errors.InvalidArgument(reason))
            return
        if self._transfer is not None:
            self._call(self._transfer[1], None, errors.Unavailable("superseded by another transfer"))
        self._transfer = (target, callback, self.deadlines.now + 2 * self.config.election_ticks, core.term)

    def compact(self, keep=None):
        """Compact the log now (the admin ``compact``/``snapshot``
        commands): drop every entry up to the applied index minus ``keep``
        (default ``compaction_overhang``), as far as the state machine is
        known durable.  Returns the new snapshot index, or None when there
        is nothing to drop."""
        keep = self.config.compaction_overhang if keep is None else keep
        return self._compact(self._compaction_limit() - keep)

    def snapshot(self):
        """A consistent snapshot of the state machine for a backup:
        ``(SnapshotMeta, chunks)`` where chunks iterate the
        `geocachedb.storage.snapshot` stream (consume or close it)."""
        index, chunks = self._open_snapshot()
        meta = self.core.snapshot_meta(index)
        if meta is None:
            meta = SnapshotMeta(index, 0, self.core.membership)
        return meta, chunks

    def _open_snapshot(self):
        """``(index, chunks)``: the state machine's snapshot stream and the
        applied index it holds (read from the stream's own header, so the
        metadata always describes the bytes sent).  A state machine that
        keeps applied writes in memory (write-behind) flushes them first."""
        self._sm.flush()
        chunks = iter(self._sm.snapshot_chunks())
        try:
            first = next(chunks)
        except StopIteration:
            raise ValueError("empty snapshot stream") from None
        index = SnapshotReader(iter([first])).read_header()
        return index, _prepend(first, chunks)

    def close(self):
        """Release what outgoing snapshot transfers hold (storage read
        transactions).  Call before closing the storage.  The snapshot
        store is the caller's to close."""
        for peer in sorted(self._senders):
            self._drop_sender(peer)
        self._incoming = None

    # ---------------------------------------------------------- the loop --

    def process(self):
        """Drain every Ready.  Reentrant calls (from a callback) return at
        once: the outer loop picks up their work."""
        if self._processing:
            return
        self._processing = True
        try:
            core = self.core
            while core.has_ready():
                rd = core.ready()
                self._handle_ready(rd)
                core.advance(rd)
                self._check_leadership()
                if rd.committed_entries and self.config.snapshot_entries:
                    self._maybe_compact()
            if self._senders:
                self._prune_senders()
        finally:
            self._processing = False

    def _handle_ready(self, rd):
        send = self._transport.send
        for m in rd.messages_before_sync:
            send(m)
        raft_log = self._log
        if rd.entries:
            raft_log.append(rd.entries)
        if rd.hard_state is not None:
            raft_log.set_hard_state(rd.hard_state)
        if rd.must_sync:
            raft_log.sync()
        for m in rd.messages:
            send(m)
        if rd.committed_entries:
            self._apply(rd.committed_entries)
        if rd.read_states:
            self._settle_reads(rd.read_states, self._applied_after(rd))
        if self._reads_confirmed and rd.committed_entries:
            self._release_confirmed_reads(rd.committed_entries[-1].index)
        for peer in rd.snapshot_requests:
            self._start_sending(peer)
        if rd.snapshot_chunks:
            for m in rd.snapshot_chunks:
                self._receive_chunk(m)

    def _applied_after(self, rd):
        if rd.committed_entries:
            return rd.committed_entries[-1].index
        return self.core.log.applied

    def _apply(self, entries):
        results = self._sm.apply(entries)
        if self.on_apply is not None:
            self.on_apply(entries, results)
        self._durable_applied = max(self._durable_applied, self._last_batch_end)
        self._last_batch_end = entries[-1].index
        if self._release_at is not None:
            # Once a later storage transaction made the installed snapshot
            # durable, the spooled copy is no longer needed.
            durable = min(self._durable_applied, self._sm.durable_index)
            if durable >= self._release_at:
                self._release_at = None
                self._store.release()
        if self._promotions:
            for entry in entries:
                if entry.kind == CONF:
                    config = confchange.decode(entry.data)
                    for node_id, callback in self._promotions.items():
                        if node_id in config.voters:
                            self._promotions.pop(node_id)
                            self._call(callback, confchange.members(config), None)
        proposals = self._proposals
        if not proposals:
            return
        for entry, result in zip(entries, results):
            pending = proposals.pop(entry.index, None)
            if pending is None:
                continue
            term, callback = pending
            if term == entry.term:
                if entry.kind == CONF:
                    result = confchange.members(confchange.decode(entry.data))
                self._call(callback, result, None)
            else:
                self._call(callback, None, errors.Unavailable(
                    "entry %d overwritten by a new leader; outcome unknown" % entry.index))

    # ------------------------------------------------------------ helpers --

    def _call(self, callback, result, error):
        try:
            callback(result, error)
        except Exception:
            log.exception("callback %r raised", callback)

    def _check_leadership(self):
        """Fail proposals that can no longer be known to commit: this node
        lost leadership (or moved to a new term) before they committed.
        Committed ones stay: they will be applied here."""
        core = self.core
        if self._transfer is not None:
            self._check_transfer()
        now = (core.role, core.term)
        if now == self._seen_role_term:
            return
        self._seen_role_term = now
        if self._senders and core.role != LEADER:
            self._prune_senders()
        if self._promotions:
            for node_id, callback in sorted(self._promotions.clear()):
                self._call(callback, None, errors.Unavailable(
                    "leadership lost before %s was promoted (it may be a learner now)" % node_id))
        if not self._proposals:
            return
        committed = core.log.committed
        lost = [index for index, (term, _) in self._proposals.items()
                if index > committed and (core.role != LEADER or term != core.term)]
        lost.sort()
        for index in lost:
            _, callback = self._proposals.pop(index)
            self._call(callback, None, errors.Unavailable(
                "leadership lost before entry %d committed; outcome unknown" % index))

    def _settle_reads(self, read_states, applied):
        reads = self._reads
        for rs in read_states:
            pending = reads.get(rs.context)
            if pending is None or pending[1]:
                continue  # timed out, or confirmed already (a duplicate)
            if rs.rejected:
                reads.pop(rs.context)
                self._call(pending[0], None, errors.Unavailable("read not confirmed by a leader"))
            elif rs.index <= applied:
                reads.pop(rs.context)
                self._call(pending[0], None, None)
            else:
                pending[1] = True
                self._read_seq += 1
                heapq.heappush(self._reads_confirmed, (rs.index, self._read_seq, rs.context))

    def _release_confirmed_reads(self, applied):
        heap = self._reads_confirmed
        reads = self._reads
        while heap and heap[0][0] <= applied:
            _, _, context = heapq.heappop(heap)
            pending = reads.pop(context)
            if pending is not None:  # else it timed out meanwhile
                self._call(pending[0], None, None)

    # -------------------------------------------------- leadership transfer --

    def _check_transfer(self):
        target, callback, deadline, term = self._transfer
        core = self.core
        error = None
        if core.lead == target and core.term > term:
            pass
        elif core.role == LEADER and core.term == term:
            if core.lead_transferee is None:
                error = "leadership transfer to %s was abandoned (not caught up in time)" % target
            elif self.deadlines.now >= deadline:
                error = "leadership transfer to %s timed out" % target
            else:
                return
        elif core.lead is not None and core.lead != target:
            error = "%s became leader instead of %s" % (core.lead, target)
        elif self.deadlines.now >= deadline:
            error = "leadership transfer to %s timed out" % target
        else:
            return  # between leaders: wait to hear from the new one
        self._transfer = None
        self._call(callback, None, errors.Unavailable(error) if error else None)

    # ------------------------------------------------------------ compaction --

    def _compaction_limit(self):
        """The highest index the log may be compacted to: applied and known
        durable in the state machine, persisted in the log, and not past a
        snapshot still being streamed (its follower continues from there)."""
        limit = min(self._durable_applied, self._log.last_index(), self.core.log.applied,
                    self._sm.durable_index)
        for sender in self._senders.values():
            limit = min(limit, sender.meta.index)
        return limit

    def _maybe_compact(self):
        target = self._compaction_limit() - self.config.compaction_overhang
        if target - (self._log.first_index() - 1) >= self.config.snapshot_entries:
            self._compact(target)

    def _compact(self, index):
        if index <= self._log.first_index() - 1:
            return None
        # The state machine holds everything up to `index` durably and the
        # configuration there (its CONF_KEY or a later CONF entry in the
        # log): the entries are no longer needed.  Synced with the next batch.
        self._log.compact(index, self.core.log.term(index))
        return index

    # ---------------------------------------------- InstallSnapshot: leader --

    def _start_sending(self, peer):
        core = self.core
        old = self._senders.pop(peer, None)
        if old is not None:
            old.close()
        if core.role != LEADER:
            return
        # The storage's snapshot is consistent at the applied index in its
        # header, which is therefore the snapshot's index.
        index, chunks = self._open_snapshot()
        meta = core.snapshot_meta(index)
        if meta is None or not meta.config.voters.voters or meta.index == 0:
            # Not known (yet) what configuration holds there: ask again later.
            chunks.close()
            core.snapshot_failed(peer)
            return
        sender = OutgoingSnapshot(peer, core.term, meta, chunks,
                                  self.config.snapshot_chunk_bytes, self.deadlines.now)
        self._senders[peer] = sender
        core.snapshot_sending(peer, meta.index)
        log.info("sending snapshot %r to %s", meta, peer)
        self._send_chunk(sender)

    def _send_chunk(self, sender):
        sender.sent_at = self.deadlines.now
        self._transport.send(snapshot_chunk(sender.peer, self.core.id, sender.term, sender.meta,
                                            sender.offset, sender.data, sender.last))

    def _snapshot_acked(self, m):
        sender = self._senders.get(m.frm)
        core = self.core
        if (sender is None or core.role != LEADER or m.term != sender.term
                or m.index != sender.meta.index):
            return
        if m.reject:
            self._drop_sender(m.frm)
        elif sender.acked(m.commit, self.deadlines.now):
            self._send_chunk(sender)

    def _tick_senders(self):
        resend = max(2, self.config.election_ticks // 2)
        give_up = 2 * self.config.election_ticks
        for peer in sorted(self._senders):
            sender = self._senders[peer]
            if self.deadlines.now - sender.progress_at >= give_up:
                # No progress for two election timeouts: the follower is
                # gone.  A later heartbeat answer asks for a fresh snapshot.
                self._drop_sender(peer)
                self.core.snapshot_failed(peer)
            elif self.deadlines.now - sender.sent_at >= resend:
                sender.resends += 1
                self._send_chunk(sender)

    def _prune_senders(self):
        """A transfer lives as long as the core wants this peer to get a
        snapshot (the leader in that term, the peer in SNAPSHOT state)."""
        core = self.core
        for peer in sorted(self._senders):
            sender = self._senders[peer]
            pr = core.tracker.get(peer)
            if (core.role != LEADER or core.term != sender.term or pr is None
                    or pr.state != "snapshot" or pr.pending_snapshot != sender.meta.index):
                self._drop_sender(peer)

    def _drop_sender(self, peer):
        sender = self._senders.pop(peer, None)
        if sender is not None:
            sender.close()

    # -------------------------------------------- InstallSnapshot: follower --

    def _snapshot_resp(self, m, received=0, reject=False):
        self._transport.send(Message(t.SNAPSHOT_RESP, m.frm, self.core.id, self.core.term,
                                     index=m.index, commit=received, reject=reject))

    def _receive_chunk(self, m):
        last, config = snapshot_flags(m)
        inc = self._incoming
        store = self._store
        if m.commit == 0:
            if inc is not None:
                store.abort()
            inc = self._incoming = _Incoming(m.frm, m.term, SnapshotMeta(m.index, m.log_term, config))
            store.begin(inc.meta)
        elif (inc is None or inc.leader != m.frm or inc.term != m.term
              or inc.meta.index != m.index or inc.meta.term != m.log_term):
            # Not the transfer we are spooling (we restarted, or it was
            # superseded): the leader must start over.
            self._snapshot_resp(m, reject=True)
            return
        elif m.commit != inc.offset:
            if m.commit < inc.offset:
                self._snapshot_resp(m, inc.offset)  # a resend: ack again
            else:
                self._abort_incoming()
                self._snapshot_resp(m, reject=True)
            return
        store.write(m.snapshot)
        inc.offset += len(m.snapshot)
        if not last:
            self._snapshot_resp(m, inc.offset)
            return
        self._incoming = None
        if not self.core.can_restore(inc.meta.index, inc.meta.term):
            # Caught up meanwhile by other means: nothing to install.
            store.abort()
            return
        store.finish()
        if not self._install(inc.meta):
            self._snapshot_resp(m, reject=True)
            return
        self.core.restore(inc.meta, inc.leader)
        log.info("installed snapshot %r from %s", inc.meta, inc.leader)

    def _abort_incoming(self):
        self._incoming = None
        self._store.abort()

    def _install(self, meta):
        """Load the completed snapshot into the state machine and reset the
        log after it.  Returns False (and drops it) when it is corrupt."""
        try:
            self._sm.restore(self._store.chunks())
        except ValueError as e:
            log.error("received snapshot %r is corrupt: %s", meta, e)
            self._store.release()
            return False
        if self._sm.applied_index != meta.index:
            raise RuntimeError("snapshot %r holds applied index %d" % (meta, self._sm.applied_index))
        self._log.reset(meta.index, meta.term)
        self._log.sync()
        self._after_install(meta)
        return True

    def _after_install(self, meta):
        # The storage's copy may still be undone by an OS crash until a
        # later batch commits; until then the spool stays (`completed`).
        self._last_batch_end = meta.index
        self._release_at = meta.index
        if self._reads_confirmed:
            self._release_confirmed_reads(meta.index)

    def _finish_install(self, meta):
        """On restart: a completed snapshot is spooled.  Redo what may not
        have happened (or not durably) before the crash: the state machine
        load, the log reset.  Every step is idempotent."""
        sm, raft_log = self._sm, self._log
        if sm.applied_index < meta.index:
            sm.restore(self._store.chunks())
        first = raft_log.first_index()
        holds = first - 1 <= meta.index <= raft_log.last_index() and raft_log.term(meta.index) == meta.term
        if not holds and first - 1 <= meta.index:
            raft_log.reset(meta.index, meta.term)
            raft_log.sync()
        self._release_at = meta.index


def _prepend(first, rest):
    """``first`` then the rest of the iterator ``rest``; closing this closes
    ``rest`` (an LMDB snapshot holds a read transaction until then)."""
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()
