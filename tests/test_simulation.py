"""The simulator, run over hundreds of seeds against the real core, and the
simulator's own parts: the disk that loses unsynced writes, the network
that cuts links, the invariant checker that must fail on each broken rule,
the deterministic replay and the command line."""

import io
import os
import subprocess
import sys
from contextlib import redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from geocachedb.raft.types import Entry, HardState, Message
from geocachedb.testing import sim
from geocachedb.testing.disk import SimDisk, SimulatedCrash
from geocachedb.testing.faults import KINDS
from geocachedb.testing.invariants import InvariantChecker, Violation
from geocachedb.testing.membership import KINDS as ADMIN_KINDS
from geocachedb.testing.membership import OperatorConfig
from geocachedb.testing.network import SimNetwork
from geocachedb.testing.scheduler import Scheduler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The simulation budget of this file: 400 seeds of 4,000 virtual time
# units (~400 ticks, ~450 client operations and ~25 faults each) take about
# 40s on one core.
RUN_TIME = 4000


def run_many(test, seeds, nodes, admin=None):
    failures = []
    faults = {}
    ops = 0
    for seed in seeds:
        result = sim.run_seed(seed, nodes, sim.SimConfig(run_time=RUN_TIME))
        ops += result.operations
        for kind, n in result.faults.items():
            faults[kind] = faults.get(kind, 0) + n
        if admin is not None:
            for kind, n in result.admin.items():
                admin[kind] = admin.get(kind, 0) + n
        if not result.ok:
            failures.append(
                "seed %d: %s\n  replay: %s"
                % (seed, result.violations[0], sim.replay_command(seed, nodes, RUN_TIME))
            )
    test.assertEqual(failures, [], "\n".join(failures))
    return ops, faults


class ManySeeds(SynchronousTestCase):
    def test_three_node_clusters_keep_every_invariant_under_faults(self):
        admin = {}
        ops, faults = run_many(self, range(0, 250), 3, admin)
        self.assertGreater(ops, 250 * 100)
        self.assertEqual(sorted(k for k in KINDS if faults.get(k)), sorted(KINDS))
        # ... and under membership changes: every operator command ran
        self.assertEqual(sorted(k for k in ADMIN_KINDS if admin.get(k)), sorted(ADMIN_KINDS))

    def test_five_node_clusters_keep_every_invariant_under_faults(self):
        ops, faults = run_many(self, range(1000, 1150), 5)
        self.assertGreater(ops, 150 * 100)
        self.assertEqual(sorted(k for k in KINDS if faults.get(k)), sorted(KINDS))


class WriteBehindSeeds(SynchronousTestCase):
    """State machines that keep applied writes in memory (as real nodes do,
    `KVStateMachine(write_behind=...)`) and lose them in crashes: the log
    must be replayed from storage's applied index and never compacted past
    what storage holds."""

    def test_crashes_that_lose_unflushed_applies_keep_every_invariant(self):
        failures = []
        lost = 0
        config = sim.SimConfig(run_time=RUN_TIME, cluster=sim.ClusterConfig(write_behind=3))
        for seed in range(5000, 5060):
            nodes = 3 if seed % 2 else 5
            result = sim.run_seed(seed, nodes, config)
            lost += result.storage_events["crashes losing unflushed applies"]
            if not result.ok:
                failures.append("seed %d: %s\n  replay: %s" % (
                    seed, result.violations[0], sim.replay_command(seed, nodes, RUN_TIME, write_behind=3)))
        self.assertEqual(failures, [], "\n".join(failures))
        self.assertGreater(lost, 20)


class Replay(SynchronousTestCase):
    def test_a_seed_replays_exactly(self):
        a = sim.run_seed(7, 5, sim.SimConfig(run_time=1500))
        b = sim.run_seed(7, 5, sim.SimConfig(run_time=1500))
        self.assertEqual(a.fingerprint, b.fingerprint)
        self.assertEqual(a.events, b.events)
        self.assertNotEqual(a.fingerprint, sim.run_seed(8, 5, sim.SimConfig(run_time=1500)).fingerprint)

    def test_a_seed_replays_exactly_in_another_process_with_other_hash_seeds(self):
        # Nothing may depend on set or dict order of str keys (which
        # PYTHONHASHSEED changes from process to process).
        prints = set()
        for hash_seed in ("1", "2"):
            env = dict(os.environ, PYTHONHASHSEED=hash_seed)
            out = subprocess.run(
                [sys.executable, "-m", "geocachedb.testing.sim", "--seed", "3", "--nodes", "3",
                 "--time", "1500", "-v"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
            )
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            prints.add(out.stdout.split("fingerprint ")[1].split()[0])
        here = sim.run_seed(3, 3, sim.SimConfig(run_time=1500)).fingerprint
        self.assertEqual(prints, {here})


class CommandLine(SynchronousTestCase):
    def run_main(self, argv):
        out = io.StringIO()
        with redirect_stdout(out):
            code = sim.main(argv)
        return code, out.getvalue()

    def test_prints_seeds_operations_faults_violations_and_time(self):
        code, out = self.run_main(["--seeds", "2", "--first-seed", "10", "--time", "1000"])
        self.assertEqual(code, 0, out)
        self.assertIn("seeds run: 2 (3 nodes: 1, 5 nodes: 1)", out)
        self.assertIn("operations: ", out)
        self.assertIn("faults injected: ", out)
        self.assertIn("violations: 0", out)
        self.assertIn("wall time: ", out)

    def test_a_failure_prints_the_seed_and_the_replay_command_and_exits_non_zero(self):
        real = sim.run_seed

        def failing(seed, nodes=3, config=None, trace=None):
            result = real(seed, nodes, config, trace)
            if seed == 11:
                result.violations.append(Violation("election-safety", 5, "two leaders (test)"))
            return result

        self.patch(sim, "run_seed", failing)
        code, out = self.run_main(["--seeds", "2", "--first-seed", "10", "--time", "1000"])
        self.assertEqual(code, 1)
        self.assertIn("FAIL seed 11 (5 nodes)", out)
        self.assertIn("violations: 1 (seeds: 11)", out)
        self.assertIn(
            "replay: python -m geocachedb.testing.sim --seed 11 --nodes 5 --time 1000 -v", out
        )


class SimulatedDisk(SynchronousTestCase):
    def test_crash_loses_writes_not_synced(self):
        disk = SimDisk("n1")
        log = disk.open()
        log.append([Entry(1, 1, b"a"), Entry(2, 1, b"b")])
        log.set_hard_state(HardState(1, "n1", 0))
        log.sync()
        log.append([Entry(3, 1, b"c")])
        log.set_hard_state(HardState(2, "n2", 0))
        disk.crash(Scheduler(0).rng, torn_probability=0.0)
        log = disk.open()
        self.assertEqual(log.last_index(), 2)
        self.assertEqual(log.hard_state(), HardState(1, "n1", 0))

    def test_torn_write_keeps_a_prefix_of_what_was_not_synced(self):
        kept = set()
        for seed in range(40):
            disk = SimDisk("n1")
            log = disk.open()
            log.append([Entry(1, 1, b"a")])
            log.sync()
            log.append([Entry(2, 1, b"b"), Entry(3, 1, b"c")])
            log.set_hard_state(HardState(3, None, 0))
            disk.crash(Scheduler(seed).rng, torn_probability=1.0)
            log = disk.open()
            state = (log.last_index(), log.hard_state().term)
            # Never the hard state without the entries written before it.
            self.assertIn(state, {(1, 0), (2, 0), (3, 0), (3, 3)})
            kept.add(state)
        self.assertGreater(len(kept), 2)

    def test_a_crashed_nodes_log_refuses_writes(self):
        disk = SimDisk("n1")
        log = disk.open()
        disk.crash(Scheduler(0).rng)
        self.assertRaises(SimulatedCrash, log.append, [Entry(1, 1, b"a")])

    def test_truncation_and_index_arithmetic(self):
        log = SimDisk("n1").open()
        self.assertEqual((log.first_index(), log.last_index(), log.term(0)), (1, 0, 0))
        log.append([Entry(1, 1), Entry(2, 1), Entry(3, 2)])
        log.append([Entry(2, 3)])
        self.assertEqual(log.last_index(), 2)
        self.assertEqual(log.term(2), 3)
        log.compact(1, 1)
        self.assertEqual((log.first_index(), log.term(1)), (2, 1))
        self.assertRaises(IndexError, log.term, 0)


class SimulatedNetwork(SynchronousTestCase):
    def test_cut_links_drop_messages_one_way(self):
        scheduler = Scheduler(1)
        got = []
        network = SimNetwork(scheduler, lambda to, m: got.append((m.frm, to)))
        network.cut("a", "b")
        network.send("a", Message(1, to="b", frm="a"))
        network.send("b", Message(1, to="a", frm="b"))
        scheduler.run_until(1000)
        self.assertEqual(got, [("b", "a")])

    def test_receiver_gets_a_copy(self):
        scheduler = Scheduler(1)
        got = []
        network = SimNetwork(scheduler, lambda to, m: got.append(m))
        sent = Message(1, to="b", frm="a", entries=[Entry(1, 1)])
        network.send("a", sent)
        sent.entries.append(Entry(2, 1))
        scheduler.run_until(1000)
        self.assertEqual(len(got[0].entries), 1)


class _Log:
    """Just enough of a log for the invariant checker."""

    def __init__(self, node_id, entries=()):
        self.node_id = node_id
        self.items = {e.index: e for e in entries}

    def entry(self, index):
        return self.items.get(index)

    def first_index(self):
        return 1

    def last_index(self):
        return max(self.items, default=0)

    def term(self, index):
        return self.items[index].term if index else 0

    def hard_state(self):
        return HardState()


class InvariantsFailOnEachBrokenRule(SynchronousTestCase):
    def setUp(self):
        self.roles = {}
        self.checker = InvariantChecker(lambda: 0, self.roles.get)

    def kinds(self):
        return {v.kind for v in self.checker.violations}

    def test_two_leaders_in_one_term(self):
        self.checker.observe("a", "leader", 3, 0, _Log("a"))
        self.checker.observe("b", "leader", 3, 0, _Log("b"))
        self.assertEqual(self.kinds(), {"election-safety"})

    def test_different_entries_at_one_index_and_term(self):
        a, b = _Log("a"), _Log("b")
        self.checker.after_append(a, [Entry(1, 1, b"x")])
        self.checker.after_append(b, [Entry(1, 1, b"y")])
        self.assertEqual(self.kinds(), {"log-matching"})

    def test_truncating_a_committed_entry(self):
        log = _Log("a", [Entry(1, 1, b"x")])
        self.checker.observe("a", "follower", 1, 1, log)
        self.checker.before_append(log, [Entry(1, 2, b"y")])
        self.assertEqual(self.kinds(), {"committed-entry-lost"})

    def test_a_leader_overwriting_its_own_log(self):
        self.roles["a"] = "leader"
        log = _Log("a", [Entry(1, 1, b"x")])
        self.checker.before_append(log, [Entry(1, 2, b"y")])
        self.assertEqual(self.kinds(), {"leader-append-only"})

    def test_a_new_leader_missing_a_committed_entry(self):
        self.checker.observe("a", "leader", 1, 1, _Log("a", [Entry(1, 1, b"x")]))
        self.checker.observe("b", "leader", 2, 0, _Log("b", [Entry(1, 2, b"y")]))
        self.assertIn("leader-completeness", self.kinds())

    def test_two_nodes_applying_different_entries_at_one_index(self):
        self.checker.applying("a", [Entry(1, 1, b"x")], 1)
        self.checker.applying("b", [Entry(1, 2, b"y")], 1)
        self.assertEqual(self.kinds(), {"state-machine-safety"})

    def test_applying_out_of_order(self):
        self.checker.applying("a", [Entry(2, 1, b"x")], 1)
        self.assertEqual(self.kinds(), {"apply-order"})

    def test_a_later_leader_overwriting_an_entry_committed_earlier(self):
        self.checker.observe("b", "leader", 2, 1, _Log("b", [Entry(1, 2, b"x")]))
        log = _Log("a", [Entry(1, 2, b"x")])
        self.checker.before_append(log, [Entry(1, 3, b"y")])
        self.assertEqual(self.kinds(), {"committed-entry-lost"})

    def test_a_stale_leader_may_overwrite_an_entry_first_committed_in_a_later_term(self):
        # b (term 4) commits (1, 2); a, cut off in term 3, still takes the
        # term-3 leader's entry there: legal, and repaired later.
        self.checker.observe("b", "leader", 4, 1, _Log("b", [Entry(1, 2, b"x")]))
        log = _Log("a", [Entry(1, 2, b"x")])
        self.checker.before_append(log, [Entry(1, 3, b"y")])
        self.assertEqual(self.kinds(), set())

    def test_a_snapshot_reset_dropping_a_committed_entry(self):
        self.checker.observe("b", "leader", 2, 2, _Log("b", [Entry(1, 2, b"x"), Entry(2, 2, b"z")]))
        log = _Log("a", [Entry(1, 2, b"x"), Entry(2, 2, b"z")])
        self.checker.before_reset(log, 1, 2)
        self.assertEqual(self.kinds(), {"committed-entry-lost"})

    def test_a_snapshot_whose_last_entry_is_not_the_committed_one(self):
        self.checker.observe("b", "leader", 2, 1, _Log("b", [Entry(1, 2, b"x")]))
        self.checker.before_reset(_Log("a"), 1, 1)
        self.assertEqual(self.kinds(), {"snapshot-mismatch"})

    def test_a_node_installing_an_older_snapshot_than_before(self):
        self.checker.installed("a", 10)
        self.checker.installed("a", 7)
        self.assertEqual(self.kinds(), {"snapshot-regress"})
        self.checker.violations = []
        self.checker.wiped("a")  # a new machine starts from nothing
        self.checker.installed("a", 3)
        self.assertEqual(self.kinds(), set())


class Membership(SynchronousTestCase):
    """The simulated operator (`geocachedb.testing.membership`)."""

    def run_ops(self, seeds, nodes, **operator):
        config = sim.SimConfig(run_time=RUN_TIME, swarm=False,
                               operator=OperatorConfig(**operator))
        results = [sim.run_seed(seed, nodes, config) for seed in seeds]
        bad = ["seed %d: %s" % (r.seed, r.violations[0]) for r in results if not r.ok]
        self.assertEqual(bad, [])
        return results

    def test_members_come_and_go_and_the_cluster_keeps_at_least_two_voters(self):
        seen = []
        original = sim.Simulation.members

        def members(simulation):
            found = original(simulation)
            if found:
                leader = simulation.operator.leader()
                seen.append(sum(1 for _, role in leader.replica.members() if role == "voter"))
            return found

        self.patch(sim.Simulation, "members", members)
        results = self.run_ops(range(20), 3, interval_min=20, interval_max=150)
        admin = {}
        for r in results:
            for kind, n in r.admin.items():
                admin[kind] = admin.get(kind, 0) + n
        self.assertGreater(admin.get("remove", 0), 10)
        self.assertGreater(admin.get("add-learner", 0) + admin.get("rejoin", 0), 10)
        self.assertGreaterEqual(min(seen), 2)

    def test_a_removed_node_left_running_does_not_keep_the_cluster_from_settling(self):
        # Only when pre-vote or check-quorum is on: otherwise a removed node
        # that never learnt of its removal disrupts elections (thesis §4.2.3),
        # and the operator powers removed nodes off.
        self.run_ops(range(10), 3, keep_removed_running=1.0,
                     weights={"remove": 3, "add-learner": 2, "promote": 2})
