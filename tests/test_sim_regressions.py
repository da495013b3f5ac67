"""Bugs the simulator found in the real core, each pinned to its seed.

A pinned seed (default `SimConfig`, the given cluster size) is one that
exposed the bug, so it must stay clean from now on.  A seed's run depends
on the simulator and the core consuming the RNG the same way: once either
changes, the seed explores a different run (the seeds below replayed the
bug with the simulator of commit ffcf7cb over the core of ba6b6c9).  That
is why each bug also has a test that puts the bug back (monkeypatched) and
checks that the simulator still finds it.
"""

from twisted.trial.unittest import SynchronousTestCase

from geocachedb.raft import core
from geocachedb.server.replica import Replica as ServerReplica
from geocachedb.raft import types as t
from geocachedb.testing import sim
from geocachedb.testing.cluster import ClusterConfig
from geocachedb.testing.faults import KINDS, NemesisConfig
from geocachedb.testing.workload import WorkloadConfig

# (seed, nodes, what went wrong)
STALE_READ_AFTER_RESTART = (
    "a follower's forwarded read batches were numbered from 1 in every "
    "incarnation, so a READ_INDEX_RESP delayed past a restart answered the new "
    "incarnation's batch with the old, lower read index: a stale read.  Failed "
    "on the core of ba6b6c9, fixed by 809a6d1 (a per-incarnation nonce in the "
    "batch context, and the answer must come from the leader asked)"
)

REJECTED_VOTE_RESETS_TIMER = (
    "liveness: with pre-vote off, a follower that rejected a higher-term vote "
    "request still restarted its election timer (RaftCore.step -> "
    "_become_follower -> _reset), contrary to Figure 2 (only granting a vote or "
    "hearing from the leader does).  Two nodes with stale logs and fast clocks "
    "(7 vs 12 units a tick) campaigned again and again, each time resetting the "
    "up-to-date nodes' timers before they expired: no leader, ever.  Found by "
    "the 10,000-seed run on 9f9a7a7, fixed by 31ba73c"
)

STALE_TERM_IGNORED_WITHOUT_LEASE = (
    "liveness: with pre-vote and check-quorum both off, a node answered a "
    "leader of an older term with nothing (as etcd-io/raft does).  A node that "
    "had missed the membership changes campaigned at ever higher terms, but "
    "only at the old members (down); the new leader's AppendEntries to it were "
    "ignored, so neither side ever learned of the other.  Found by the "
    "2,000-seed --write-behind run on 690c949 (it fails without write-behind "
    "too); fixed by answering a stale leader always (RaftCore._answer_stale_leader)"
)

PINNED = [
    (21426, 3, STALE_TERM_IGNORED_WITHOUT_LEASE),
    (4503, 5, REJECTED_VOTE_RESETS_TIMER),
    (1961, 5, STALE_READ_AFTER_RESTART),
    (1983, 5, STALE_READ_AFTER_RESTART),
]


class PinnedSeeds(SynchronousTestCase):
    def test_pinned_seeds_stay_clean(self):
        failures = []
        for seed, nodes, bug in PINNED:
            result = sim.run_seed(seed, nodes, sim.SimConfig())
            if not result.ok:
                failures.append(
                    "seed %d (%d nodes), once: %s\n  now: %s\n  replay: %s"
                    % (seed, nodes, bug, result.violations[0],
                       sim.replay_command(seed, nodes))
                )
        self.assertEqual(failures, [], "\n".join(failures))


class StaleReadAfterRestart(SynchronousTestCase):
    def test_simulator_still_finds_read_batches_that_repeat_across_restarts(self):
        # Put the bug back: every incarnation numbers its batches the same.
        original = core.RaftCore.__init__

        def init(self, *args, **kwargs):
            original(self, *args, **kwargs)
            self._read_nonce = b"\0" * 8

        self.patch(core.RaftCore, "__init__", init)
        weights = {kind: 0 for kind in KINDS}
        weights.update({"crash-loop": 3, "crash": 2, "delay": 2})
        for seed in range(1000):
            config = sim.SimConfig(
                swarm=False,
                nemesis=NemesisConfig(
                    weights=weights, base_spike=0.1, base_spike_delay=300, quick_restart=1.0
                ),
                workload=WorkloadConfig(get_weight=70, put_weight=30, delete_weight=0),
            )
            result = sim.run_seed(seed, 3 if seed % 2 == 0 else 5, config)
            if not result.ok:
                print("caught at seed %d" % seed)
                # A stale read of the revision workload's pairs shows as a
                # revision older than an acknowledged write (seed 167).
                self.assertLessEqual({v.kind for v in result.violations},
                                     {"linearizability", "revision-real-time"})
                return
        self.fail("the simulator no longer finds the stale read after restart")


class RejectedVoteRestartsTimer(SynchronousTestCase):
    def test_simulator_still_finds_stale_candidates_starving_elections(self):
        # Put the bug back: a follower moved to a higher term by a vote
        # request it rejects restarts its election timer.
        original = core.RaftCore.step

        def step(self, m):
            moved = m.type == t.VOTE and m.term > self.term and self.role == t.FOLLOWER
            original(self, m)
            if moved and self.term == m.term and self.vote != m.frm:
                self.election_elapsed = 0

        self.patch(core.RaftCore, "step", step)
        # The seed that found it first; if the run has drifted, a search with
        # pre-vote off and widely different clock rates.
        runs = [(4503, 5, sim.SimConfig())]
        for seed in range(600):
            config = sim.SimConfig(
                cluster=ClusterConfig(tick_skew=0.5, raft_overrides={"pre_vote": False})
            )
            runs.append((seed, 3 if seed % 2 == 0 else 5, config))
        for seed, nodes, config in runs:
            result = sim.run_seed(seed, nodes, config)
            if not result.ok:
                print("caught at seed %d (%d nodes)" % (seed, nodes))
                self.assertEqual({v.kind for v in result.violations}, {"liveness"})
                return
        self.fail("the simulator no longer finds elections starved by stale candidates")


# A stale leader with pre-vote and check-quorum off was never told the new
# term (seed 21426 found it).  Since the server core forwards requests the
# simulator's schedule no longer reaches it within 1,000 seeds, so that bug
# is pinned by a unit test instead:
# test_raft_prevote_checkquorum.test_stale_leader_is_told_the_new_term_with_both_options_off.


class RemoveAcknowledgedFromAnUncommittedConfiguration(SynchronousTestCase):
    """A stale leader whose own, not yet committed, removal of a node was in
    its log answered a retried ``remove`` as already done; the new leader
    never had it, and the "removed" node was powered off while still a
    voter (seed 109, 3 nodes, both options off, write-behind)."""

    def test_simulator_finds_it_when_put_back(self):
        self.patch(ServerReplica, "conf_committed", lambda self: True)
        config = stale_leader_config()
        for seed in [109, *range(1000)]:
            result = sim.run_seed(seed, 3, config)
            if not result.ok:
                print("caught at seed %d" % seed)
                self.assertLessEqual({v.kind for v in result.violations},
                                     {"liveness", "membership-change-lost"})
                return
        self.fail("the simulator no longer finds a removal acknowledged too early")

    def test_the_seed_that_finds_it_stays_clean(self):
        result = sim.run_seed(109, 3, stale_leader_config())
        self.assertEqual(result.violations, [], sim.replay_command(109, 3))


class MembershipAnsweredFromAStaleLeadersView(SynchronousTestCase):
    """A paused leader of an old term, its configuration committed as far
    as it knew, answered ``add n3`` as already done: n3 had been removed
    in the new term meanwhile (seed 3434, 3 nodes).  Membership now
    confirms leadership with a ReadIndex round before answering from its
    own view."""

    # Since the data model moved the simulator's schedule, seed 3434 and
    # seeds 0-2,100 no longer reach it with the bug put back, so
    # a unit test pins it (and checks it fails with the bug back):
    # test_server_forwarding.MembershipIdempotenceTests.

    def test_the_seed_that_finds_it_stays_clean(self):
        result = sim.run_seed(3434, 3)
        self.assertEqual(result.violations, [], sim.replay_command(3434, 3))


def stale_leader_config():
    """Pre-vote and check-quorum off (the bug needs both off), state
    machines that lose unflushed applies in a crash."""
    return sim.SimConfig(cluster=ClusterConfig(
        write_behind=3, raft_overrides={"pre_vote": False, "check_quorum": False}))
