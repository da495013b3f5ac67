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
batch -> complete the proposals and reads they unblock -> `core.advance`.
"""

import heapq

from twisted.logger import Logger

from geocachedb import errors
from geocachedb.raft.core import RaftCore, check_message
from geocachedb.raft.types import LEADER, RaftConfig

log = Logger()


class Replica:
    def __init__(self, node_id, voters, log, transport, state_machine, rng, config=None):
        self.config = config or RaftConfig()
        self._log = log
        self._transport = transport
        self._sm = state_machine
        self.core = RaftCore(node_id, voters, log, self.config, rng,
                             applied=state_machine.applied_index)
        self._members = frozenset(self.core.tracker.ids)
        self._ticks = 0
        # index -> (term, callback) of proposals made here as leader
        self._proposals = {}
        self._seen_role_term = (self.core.role, self.core.term)
        # read context -> (callback, deadline tick), waiting for a ReadState
        self._reads = {}
        # heap of (read index, seq, callback, deadline): confirmed, waiting
        # for the state machine to catch up
        self._reads_confirmed = []
        self._read_seq = 0
        self._processing = False

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

    def status(self):
        return self.core.status()

    # ------------------------------------------------------------- inputs --

    def tick(self):
        self._ticks += 1
        self.core.tick()
        self._check_leadership()
        if self._reads or self._reads_confirmed:
            self._expire_reads()

    def receive(self, message):
        """Step a message from a peer.  Returns False (and drops it) when it
        is malformed, not for us, or from a node outside the configuration."""
        try:
            check_message(message)
        except ValueError:
            return False
        if message.to != self.core.id or message.frm == self.core.id or message.frm not in self._members:
            return False
        self.core.step(message)
        self._check_leadership()
        return True

    def propose(self, data, callback):
        """Replicate ``data`` (an encoded Command); ``callback(result, error)``
        fires exactly once (see the module docs of `geocachedb.replica`)."""
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
        self._reads[context] = (callback, self._ticks + self.config.election_ticks)

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

    def _applied_after(self, rd):
        if rd.committed_entries:
            return rd.committed_entries[-1].index
        return self.core.log.applied

    def _apply(self, entries):
        results = self._sm.apply(entries)
        proposals = self._proposals
        if not proposals:
            return
        for entry, result in zip(entries, results):
            pending = proposals.pop(entry.index, None)
            if pending is None:
                continue
            term, callback = pending
            if term == entry.term:
                self._call(callback, result, None)
            else:
                self._call(callback, None, errors.Unavailable(
                    "entry %d overwritten by a new leader; outcome unknown" % entry.index))

    # ------------------------------------------------------------ helpers --

    def _call(self, callback, result, error):
        try:
            callback(result, error)
        except Exception:
            log.failure("callback {callback!r} raised", callback=callback)

    def _check_leadership(self):
        """Fail proposals that can no longer be known to commit: this node
        lost leadership (or moved to a new term) before they committed.
        Committed ones stay: they will be applied here."""
        core = self.core
        now = (core.role, core.term)
        if now == self._seen_role_term:
            return
        self._seen_role_term = now
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
            pending = reads.pop(rs.context, None)
            if pending is None:
                continue  # already timed out
            callback, deadline = pending
            if rs.rejected:
                self._call(callback, None, errors.Unavailable("read not confirmed by a leader"))
            elif rs.index <= applied:
                self._call(callback, None, None)
            else:
                self._read_seq += 1
                heapq.heappush(self._reads_confirmed, (rs.index, self._read_seq, callback, deadline))

    def _release_confirmed_reads(self, applied):
        heap = self._reads_confirmed
        while heap and heap[0][0] <= applied:
            _, _, callback, _ = heapq.heappop(heap)
            self._call(callback, None, None)

    def _expire_reads(self):
        now = self._ticks
        expired = [ctx for ctx, (_, deadline) in self._reads.items() if deadline <= now]
        for ctx in expired:
            callback, _ = self._reads.pop(ctx)
            self._call(callback, None, errors.Unavailable("read not confirmed in time"))
        if self._reads_confirmed and any(item[3] <= now for item in self._reads_confirmed):
            keep = []
            for item in self._reads_confirmed:
                if item[3] <= now:
                    self._call(item[2], None, errors.Unavailable("read index not applied in time"))
                else:
                    keep.append(item)
            heapq.heapify(keep)
            self._reads_confirmed = keep
