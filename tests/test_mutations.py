"""A simulator that finds nothing wrong with a broken core is not done.

Each test here breaks the real Raft core or the server layer above it on
purpose with the smallest patch
that embodies one classic bug, then runs the simulator over seeds 0, 1, 2,
... and passes as soon as one seed reports a violation (failing if none of
the first 1,000 does).  Each uses a fault mix chosen to provoke its bug
quickly; the seed that caught it is in the test's output and noted in
docs/RAFT_IMPLEMENTATION.md ("Simulator").
"""

from twisted.trial.unittest import SynchronousTestCase

from geocachedb.raft import core, log, progress, readindex
from geocachedb.raft import quorum as quorum_module
from geocachedb.raft import types as t
from geocachedb.raft.types import HardState, Message
from geocachedb import statemachine
from geocachedb.server import forwarding
from geocachedb.server import replica as server_replica
from geocachedb.server import server as server_module
from geocachedb.testing import sim
from geocachedb.wire import geocache_pb2 as pb
from geocachedb.testing.faults import KINDS, NemesisConfig
from geocachedb.testing.membership import OperatorConfig
from geocachedb.testing.workload import WorkloadConfig

MAX_SEEDS = 1000


def only(**weights):
    """Fault weights: the given kinds, every other kind off."""
    chosen = {kind: 0 for kind in KINDS}
    chosen.update({k.replace("_", "-"): v for k, v in weights.items()})
    return chosen


class MutationTest(SynchronousTestCase):
    def find_violation(self, make_config, nodes, run_time, kinds=None):
        """Run seeds until one fails (with ``kinds``: with a violation of
        one of those kinds); return its result (None if none of MAX_SEEDS
        did)."""
        for seed in range(MAX_SEEDS):
            config = make_config()
            config.run_time = run_time
            config.swarm = False  # the mix chosen for this bug, in every seed
            size = nodes[seed % len(nodes)]
            result = sim.run_seed(seed, size, config)
            if not result.ok:
                found = sorted({v.kind for v in result.violations})
                print("caught at seed %d (%d nodes): %s" % (seed, size, ", ".join(found)))
                if kinds is None or set(found) & set(kinds):
                    return result
        return None

    def assertCaught(self, result, *kinds):
        self.assertIsNotNone(result, "the simulator did not notice the broken core")
        found = {v.kind for v in result.violations}
        self.assertTrue(
            found & set(kinds),
            "caught, but as %s rather than %s: %s" % (found, kinds, result.violations[:3]),
        )
        self.assertNotIn("exception", found - set(kinds), result.violations[:3])


class CommitWithoutMajority(MutationTest):
    def test_simulator_catches_commit_without_a_majority(self):
        # The leader counts only itself: an entry commits as soon as the
        # leader has it.
        def committed(tracker):
            return max(tracker.progress[v].match for v in tracker.config.voters.voters)

        self.patch(progress.ProgressTracker, "committed", committed)
        result = self.find_violation(sim.SimConfig, nodes=[3, 5], run_time=2000)
        self.assertCaught(
            result,
            "state-machine-safety",
            "committed-entry-lost",
            "leader-completeness",
            "acknowledged-write-lost",
            "linearizability",
        )


class VoteNotPersisted(MutationTest):
    def test_simulator_catches_a_vote_that_is_not_persisted(self):
        # The hard state reaches the disk without its vote: a node that
        # crashes after voting can vote again in the same term.
        original = core.RaftCore.ready

        def ready(self):
            rd = original(self)
            if rd.hard_state is not None:
                rd.hard_state = HardState(rd.hard_state.term, None, rd.hard_state.commit)
            return rd

        self.patch(core.RaftCore, "ready", ready)

        # Many elections (leaders isolated, nodes crashing and coming back
        # within a moment) and vote requests that arrive late or twice.
        def config():
            return sim.SimConfig(
                nemesis=NemesisConfig(
                    interval_min=10,
                    interval_max=100,
                    downtime_max=20,
                    base_spike=0.2,
                    base_duplicate=0.1,
                    weights=only(isolate=3, crash=4, crash_mid_io=2, duplication=2, delay=2),
                )
            )

        result = self.find_violation(config, nodes=[5, 3], run_time=2000)
        self.assertCaught(result, "election-safety", "log-matching", "leader-append-only")


class VoteForStaleLog(MutationTest):
    def test_simulator_catches_a_vote_granted_to_a_stale_log(self):
        # Every candidate's log counts as up to date (§5.4.1 skipped).
        self.patch(log.RaftLog, "is_up_to_date", lambda self, index, term: True)
        result = self.find_violation(sim.SimConfig, nodes=[3, 5], run_time=2000)
        self.assertCaught(
            result,
            "leader-completeness",
            "committed-entry-lost",
            "state-machine-safety",
            "acknowledged-write-lost",
            "linearizability",
            # The core's own guard (LogInvariantError) may fire first.
            "exception",
        )


class ReadWithoutConfirmingLeadership(MutationTest):
    def test_simulator_catches_a_read_served_without_a_heartbeat_round(self):
        # ReadIndex releases reads at once, as if a quorum had confirmed the
        # leadership already.
        original = readindex.ReadIndexQueue.release

        def release(self, voters):
            self._acks = {v: self._seq for v in voters.voters}
            return original(self, voters)

        self.patch(readindex.ReadIndexQueue, "release", release)

        # A leader cut off (or frozen, or with a slow clock) keeps believing
        # in its leadership while a new one takes writes; many readers.
        def config():
            return sim.SimConfig(
                nemesis=NemesisConfig(weights=only(isolate=3, clock=3, partition=2, pause=1)),
                workload=WorkloadConfig(
                    clients=6, keys=2, get_weight=60, put_weight=35, delete_weight=5
                ),
            )

        result = self.find_violation(config, nodes=[3, 5], run_time=2000)
        self.assertCaught(result, "linearizability")


class RemovedNodesVoteCounted(MutationTest):
    def test_simulator_catches_counting_a_removed_nodes_vote(self):
        # A candidate asks every node it has heard from, not just the voters
        # of its configuration, and counts every grant against its quorum:
        # a removed node that is still running helps elect it.
        def tally_votes(tracker):
            quorum = tracker.config.voters.quorum
            granted = sum(1 for v in tracker.votes.values() if v)
            rejected = len(tracker.votes) - granted
            if granted >= quorum:
                return quorum_module.VOTE_WON
            if rejected >= quorum:
                return quorum_module.VOTE_LOST
            return quorum_module.VOTE_PENDING

        original = core.RaftCore._campaign

        def _campaign(self, pre, transfer=False):
            original(self, pre, transfer)
            if self.role in (t.CANDIDATE, t.PRE_CANDIDATE):
                last = self.log.last_index()
                others = set(self._last_heard) - set(self.tracker.config.voters.voters) - {self.id}
                for peer in sorted(others):
                    self._send(Message(t.PRE_VOTE if pre else t.VOTE, peer, self.id,
                                       self.term + 1 if pre else self.term,
                                       log_term=self.log.term(last), index=last))

        self.patch(progress.ProgressTracker, "tally_votes", tally_votes)
        self.patch(core.RaftCore, "_campaign", _campaign)

        # Membership changes, removed nodes left running.
        def config():
            return sim.SimConfig(operator=OperatorConfig(keep_removed_running=1.0))

        result = self.find_violation(config, nodes=[3, 5], run_time=4000)
        self.assertCaught(
            result,
            "election-safety",
            "leader-completeness",
            "committed-entry-lost",
            "state-machine-safety",
            "log-matching",
            "acknowledged-write-lost",
            "linearizability",
        )


class ConfChangeBeforeThePreviousCommits(MutationTest):
    def test_simulator_catches_a_configuration_change_while_one_is_uncommitted(self):
        # Configurations are in force as soon as they are appended, so the
        # counterpart of "applying a change before it commits" is a leader
        # starting a change while the previous one is not committed: two
        # single-server changes in force at once are a two-server change,
        # whose old and new majorities need not overlap.
        original = core.RaftCore._propose_conf

        def _propose_conf(self, kind, node_id, address):
            saved = self._conf_index
            self._conf_index = 0  # "no change in progress"
            try:
                return original(self, kind, node_id, address)
            finally:
                if self._conf_index == 0:
                    self._conf_index = saved

        self.patch(core.RaftCore, "_propose_conf", _propose_conf)
        kinds = (
            "election-safety",
            "leader-completeness",
            "committed-entry-lost",
            "state-machine-safety",
            "log-matching",
            "acknowledged-write-lost",
            "linearizability",
            # The promotion this mutation lets start before the previous
            # change committed (the first symptom since snapshots carry
            # history and the seeds moved).
            "promotion-not-caught-up",
        )
        # Disjoint majorities can also just stall the cluster (a liveness
        # failure, seed 54 since tail batching); the search goes on to the
        # safety violation this mutation is about.
        result = self.find_violation(sim.SimConfig, nodes=[3, 5], run_time=4000, kinds=kinds)
        self.assertCaught(result, *kinds)


# -- the server layer (geocachedb.server), which the simulator drives on
# every node since issue 13


def _key_of(data):
    """(operation, key) of an encoded client write."""
    cmd = pb.Command.FromString(data)
    op = cmd.WhichOneof("op")
    if op is None:
        raise ValueError("not a client write")
    body = getattr(cmd, op)
    # txn, compact: no single key; every one of them "matches" its kind.
    return op, body.key if op in ("put", "delete", "incr") else None


class ForwardedWriteAnsweredByAnotherWrite(MutationTest):
    def test_simulator_catches_a_forwarded_write_answered_by_a_write_of_the_same_key(self):
        # The follower matches applied entries to its waiting clients by
        # operation and key instead of by the unique proposal_id: another
        # client's put (or delete) of that key answers this one, with that entry's index, before
        # this one is applied (if it ever is).
        def applied(self, entries, results):
            sent = self._sent
            for entry, result in zip(entries, results):
                try:
                    key = _key_of(entry.data)
                except Exception:
                    continue  # not a client write
                for data, callback in list(sent.items()):
                    if _key_of(data) == key:
                        sent.pop(data)
                        callback(result, None)
                        break

        self.patch(forwarding.Forwarding, "applied", applied)
        # The revision workload's checks see the same bug in txns answered
        # with another txn's result.
        kinds = ("acknowledged-write-lost", "linearizability", "txn-count", "txn-order",
                 "history-read", "revision-real-time")
        result = self.find_violation(sim.SimConfig, nodes=[3, 5], run_time=2000, kinds=kinds)
        self.assertCaught(result, *kinds)


class ReadServedWhileWaitingForALeader(MutationTest):
    def test_simulator_catches_a_read_served_from_local_state_without_a_leader(self):
        # "No leader yet, so serve it from what we have" instead of waiting
        # for one: a node cut off from the majority answers with old data.
        original = server_module.Server.read_barrier

        def read_barrier(self, callback):
            if self.replica.leader_id is None:
                callback(None, None)
                return
            original(self, callback)

        self.patch(server_module.Server, "read_barrier", read_barrier)
        result = self.find_violation(sim.SimConfig, nodes=[3, 5], run_time=2000,
                                     kinds=("linearizability",))
        self.assertCaught(result, "linearizability")


class ForwardedWriteAnsweredBeforeItApplies(MutationTest):
    def test_simulator_catches_a_forwarded_write_answered_once_it_is_in_the_log(self):
        # The follower answers its client as soon as the leader's append
        # with the write is synced to its own log ("it has reached us"),
        # not when the entry commits and applies: a leader that dies before
        # a majority has it takes the acknowledged write with it.
        original = server_replica.Replica._handle_ready

        def handle_ready(self, rd):
            original(self, rd)
            if rd.entries and self.on_apply is not None:
                results = [pb.Response(delete=pb.DeleteResponse(index=e.index, deleted=True))
                           if _is_delete(e.data) else pb.Response(put=pb.PutResponse(index=e.index))
                           for e in rd.entries]
                self.on_apply(rd.entries, results)

        self.patch(server_replica.Replica, "_handle_ready", handle_ready)
        kinds = ("acknowledged-write-lost", "linearizability")
        result = self.find_violation(sim.SimConfig, nodes=[3, 5], run_time=2000, kinds=kinds)
        self.assertCaught(result, *kinds)


def _is_delete(data):
    try:
        return _key_of(data)[0] == "delete"
    except Exception:
        return False


class PromotionOfALearnerNotCaughtUp(MutationTest):
    def test_simulator_catches_a_learner_promoted_before_it_caught_up(self):
        # The catch-up test reads the optimistic `next` (what the leader
        # has sent) instead of `match` (what the learner has stored).
        original = core.RaftCore._propose_conf

        def _propose_conf(self, kind, node_id, address):
            pr = self.tracker.progress.get(node_id)
            if kind != "promote" or pr is None:
                return original(self, kind, node_id, address)
            saved = pr.match
            pr.match = max(pr.match, pr.next - 1)
            try:
                return original(self, kind, node_id, address)
            finally:
                pr.match = saved

        self.patch(core.RaftCore, "_propose_conf", _propose_conf)
        result = self.find_violation(sim.SimConfig, nodes=[3, 5], run_time=2000,
                                     kinds=("promotion-not-caught-up",))
        self.assertCaught(result, "promotion-not-caught-up")
