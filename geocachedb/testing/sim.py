"""The deterministic cluster simulator and its command line.

    python -m geocachedb.testing.sim --seeds 1000 --nodes 5 [--first-seed N]
    python -m geocachedb.testing.sim --seed 17 --nodes 3 -v --trace

One seed is one run: `run_seed` builds a `Scheduler` (the one RNG), a
`SimNetwork`, a `SimCluster` of real `Replica` objects, a client `Workload`
and the `Nemesis`, then

1. runs the workload under faults for ``run_time`` (virtual time), while
   the `InvariantChecker` watches every append, commit and apply;
2. stops the nemesis, heals every fault and restarts crashed nodes, and
   waits until the cluster settles: one leader, everything committed and
   applied everywhere, no client request in flight;
3. reads every key through the normal linearizable read path;
4. checks that every acknowledged write is in the committed log at the
   index it was acknowledged with and that all state machines agree, then
   runs the linearizability checker over the whole client history.

Anything that goes wrong is a `Violation`; the command line prints how to
replay the seed, which reproduces the run exactly (same events, same
fingerprint).
"""

import argparse
import hashlib
import sys
import time
import traceback

from geocachedb.testing import linearizability
from geocachedb.testing.cluster import ClusterConfig, SimCluster
from geocachedb.testing.faults import KINDS, Nemesis, NemesisConfig
from geocachedb.testing.invariants import InvariantChecker, Violation
from geocachedb.testing.revisions import RevisionChecker
from geocachedb.testing.membership import KINDS as ADMIN_KINDS
from geocachedb.testing.membership import Operator, OperatorConfig
from geocachedb.testing.network import SimNetwork
from geocachedb.testing.scheduler import Scheduler
from geocachedb.testing.swarm import swarm
from geocachedb.testing.workload import Workload, WorkloadConfig
from geocachedb.wire.commands import without_proposal_id


class SimConfig:
    """Everything one run depends on besides the seed and cluster size."""

    run_time = 4000  # virtual time under faults (a tick is ~10)
    swarm = True  # each seed draws its own fault mix (`geocachedb.testing.swarm`)
    settle_timeout = 5000  # to recover once every fault is healed
    final_read_timeout = 2000
    check_steps = 20_000_000  # linearizability search budget per key

    def __init__(self, cluster=None, nemesis=None, workload=None, operator=None, **options):
        self.cluster = cluster or ClusterConfig()
        self.nemesis = nemesis or NemesisConfig()
        self.workload = workload or WorkloadConfig()
        self.operator = operator or OperatorConfig()
        for name, value in options.items():
            if not hasattr(SimConfig, name):
                raise TypeError("unknown SimConfig option %r" % (name,))
            setattr(self, name, value)


class SimResult:
    def __init__(self, seed, nodes):
        self.seed = seed
        self.nodes = nodes
        self.violations = []
        self.ops = {}
        self.faults = {}
        self.admin = {}  # operator commands: membership, transfers, compaction
        self.messages = 0
        self.forwarded = 0  # requests and writes a follower sent to the leader
        self.storage_events = {}  # fsyncs, compactions, snapshots installed, ...
        self.events = 0
        self.fingerprint = ""
        self.wall = 0.0
        self.linearizability = None

    @property
    def ok(self):
        return not self.violations

    @property
    def operations(self):
        return self.ops.get("invoked", 0)

    def __repr__(self):
        return "SimResult(seed=%d, nodes=%d, ok=%r, ops=%d, faults=%d)" % (
            self.seed,
            self.nodes,
            self.ok,
            self.operations,
            sum(self.faults.values()),
        )


class Simulation:
    def __init__(self, seed, nodes=3, config=None, trace=None):
        self.seed = seed
        self.size = nodes
        self.config = config or SimConfig()
        self._trace = trace
        self.scheduler = Scheduler(seed)
        if self.config.swarm:
            self.config = swarm(self.config, self.scheduler.rng)
        self.checker = InvariantChecker(lambda: self.scheduler.now, self._role_of,
                                        durable_last=self._durable_last)
        self.checker.revisions = RevisionChecker(self._fail)
        self.cluster = SimCluster(
            self.scheduler,
            lambda deliver: SimNetwork(self.scheduler, deliver),
            self.checker,
            nodes,
            self.config.cluster,
        )
        self.workload = Workload(self.scheduler, self.cluster, self.config.workload)
        self.cluster.crash_listeners.append(self._crashed)
        self.nemesis = Nemesis(self.scheduler, self.cluster, self.config.nemesis, self.trace)
        self.operator = Operator(self.scheduler, self.cluster, self.config.operator, self.trace)
        self._roles = {}
        if trace is not None:
            observe = self.cluster.observe

            def traced_observe(node):
                observe(node)
                replica = node.replica
                seen = (replica.role, replica.term)
                if self._roles.get(node.node_id) != seen:
                    self._roles[node.node_id] = seen
                    self.trace("%s is %s in term %d (commit %d)" % (
                        node.node_id, replica.role, replica.term, replica.commit_index))

            self.cluster.observe = traced_observe

    def trace(self, text):
        if self._trace is not None:
            self._trace("%7d  %s" % (self.scheduler.now, text))

    def _durable_last(self, node_id):
        node = self.cluster.node(node_id)
        return None if node is None else node.disk.durable_last_index()

    def _role_of(self, node_id):
        node = self.cluster.node(node_id)
        if node is None or not node.up or node.replica is None:
            return None
        return node.replica.role

    def _crashed(self, node_id):
        self.trace("%s crashed" % node_id)
        self.workload.node_crashed(node_id)
        self._roles.pop(node_id, None)

    def _fail(self, kind, message):
        self.checker.violations.append(Violation(kind, self.scheduler.now, message))

    # -- the phases

    def run(self):
        result = SimResult(self.seed, self.size)
        started = time.perf_counter()
        try:
            self._run()
        except Exception:
            self._fail("exception", traceback.format_exc())
        result.wall = time.perf_counter() - started
        result.violations = list(self.checker.violations)
        for kind, message in self.cluster.problems:
            result.violations.append(Violation(kind, None, message))
        result.ops = dict(self.workload.counts)
        result.faults = dict(self.nemesis.counts)
        result.admin = dict(self.operator.counts)
        result.messages = self.cluster.network.sent
        nodes = list(self.cluster.nodes.values())
        result.forwarded = sum(n.forwarded for n in nodes)
        result.storage_events = {
            "fsyncs": sum(n.disk.fsyncs for n in nodes),
            "crashes": sum(n.disk.crashes for n in nodes),
            "torn writes": sum(n.disk.torn_writes for n in nodes),
            "compactions": sum(n.disk.compactions for n in nodes),
            "snapshots installed": sum(n.snapshot_store.finished for n in nodes),
        }
        if self.config.cluster.write_behind:
            result.storage_events["crashes losing unflushed applies"] = sum(n.unflushed_lost for n in nodes)
        result.events = self.scheduler.events_run
        result.fingerprint = self._fingerprint()
        return result

    def _run(self):
        cfg = self.config
        sched = self.scheduler
        self.trace("raft options: %r" % (self.cluster.raft_options,))
        self.trace("fault weights: %r" % ({k: round(v, 2) for k, v in
                                           self.config.nemesis.weights.items() if v},))
        self.trace("operator weights: %r" % ({k: round(v, 2) for k, v in
                                              self.config.operator.weights.items() if v},))
        self.cluster.start()
        self.workload.start()
        self.nemesis.start()
        self.operator.start()
        sched.run_until(cfg.run_time, stop=self._broken)
        if self._broken():
            return
        self.operator.stop()
        self.nemesis.stop()
        self.workload.stop()
        self.trace("settling")
        if not sched.run_until(sched.now + cfg.settle_timeout, stop=self._settled):
            self._fail("liveness", "no stable leader with everything applied %d after healing: %s"
                       % (cfg.settle_timeout, self._status()))
            return
        if self._broken():
            return
        self.trace("settled: %s" % self._status())
        self._final_reads()
        if self._broken():
            return
        # The final reads may have moved things on (a new leader's empty
        # entry): settle again before comparing the replicas.
        if not sched.run_until(sched.now + cfg.settle_timeout, stop=self._settled):
            self._fail("liveness", "not settled again after the final reads: %s" % self._status())
            return
        self._final_checks()

    def _broken(self):
        return bool(self.checker.violations)

    def members(self):
        """The nodes in the configuration of the leader of the highest term
        (every one of them, voter or learner), or None without a leader."""
        leader = self.operator.leader()
        if leader is None:
            return None
        return [self.cluster.node(i) for i, _ in leader.replica.members()]

    def _settled(self):
        if self._broken():
            return True
        if not self.workload.idle:
            return False
        members = self.members()
        if not members:
            return False
        leader = None
        for node in members:
            if not node.up:
                return False
            if node.replica.role == "leader":
                if leader is not None:
                    return False
                leader = node
        if leader is None or leader.replica.status()["conf_pending"]:
            return False
        commit = leader.replica.commit_index
        if commit != leader.disk.log.last_index():
            return False
        # A node outside the configuration (removed, left running) is not
        # waited for; it must simply not have disturbed the members.
        return all(n.state_machine.applied_index == commit for n in members)

    def _status(self):
        parts = []
        for node_id in self.cluster.node_ids:
            node = self.cluster.node(node_id)
            if not node.up:
                parts.append("%s down" % node_id)
                continue
            r = node.replica
            parts.append("%s %s t%d c%d a%d l%d%s" % (
                node_id, r.role, r.term, r.commit_index,
                node.state_machine.applied_index, node.disk.log.last_index(),
                "" if r.is_member else " (not a member)"))
        return ", ".join(parts)

    def _final_reads(self):
        """Read every key through the linearizable path; these reads join
        the history, so a lost acknowledged write shows up as a
        linearizability violation."""
        sched = self.scheduler
        history = self.workload.history
        missing = list(self.workload.keys)
        for _ in range(3):
            before = len(history)
            first_id = history._next
            members = self.members() or []
            self.workload.read_all(missing, [n.node_id for n in members if n.in_service])
            sched.run_until(sched.now + self.config.final_read_timeout,
                            stop=lambda: self.workload.idle)
            done = {op.key for op in history.operations()
                    if op.id >= first_id and not op.unknown}
            missing = [k for k in missing if k not in done]
            if not missing:
                return
            del before
        self._fail("liveness", "final reads of %r did not succeed after healing" % (missing,))

    def _final_checks(self):
        checker = self.checker
        nodes = self.members()
        # Every acknowledged write is in the committed log at its index.
        for index, data, op_id in self.workload.acknowledged:
            entry = checker.applied.get(index)
            if entry is None or not _same_write(entry.data, data):
                self._fail("acknowledged-write-lost",
                           "op %d was acknowledged at index %d, which holds %r"
                           % (op_id, index, entry))
                continue
            for node in nodes:
                mine = node.disk.log.entry(index)
                if index >= node.disk.log.first_index() and (mine is None or not _same_write(mine.data, data)):
                    self._fail("acknowledged-write-lost",
                               "op %d acknowledged at index %d is not in %s's log"
                               % (op_id, index, node.node_id))
        # Every acknowledged membership change still holds (nothing sent
        # about that node since): a removed node is out, an added one in.
        final = dict(self.operator.leader().replica.members())
        for node_id, kind in sorted(self.operator.acknowledged().items()):
            if (kind == "remove") == (node_id in final):
                self._fail("membership-change-lost",
                           "%s %s was acknowledged, but the settled configuration is %r"
                           % (kind, node_id, sorted(final.items())))
        # Every state machine holds the same data (written out first: with
        # write-behind some of it is still in memory).
        for node in nodes:
            node.state_machine.flush()
        first = nodes[0]
        expected = dict(first.storage.scan())
        for node in nodes[1:]:
            mine = dict(node.storage.scan())
            if mine != expected or node.storage.applied_index() != first.storage.applied_index():
                keys = sorted(k for k in set(mine) | set(expected) if mine.get(k) != expected.get(k))
                self._fail("state-machine-divergence",
                           "%s (applied %d) and %s (applied %d) differ after settling, at keys %r"
                           % (first.node_id, first.storage.applied_index(), node.node_id,
                              node.storage.applied_index(), keys))
        # The data model: counters, revisions and retained history.
        if self.workload.revisions is not None:
            self.workload.revisions.check([n.state_machine for n in nodes])
        for node in nodes:
            self.checker.revisions.retained(node.node_id, node.state_machine.space,
                                            node.state_machine.stored)
        verdict = linearizability.check(self.workload.history, max_steps=self.config.check_steps)
        self.linearizability = verdict
        if verdict.ok is False:
            self._fail("linearizability", verdict.explanation)
        elif verdict.ok is None:
            self._fail("linearizability-undecided", verdict.explanation)

    def _fingerprint(self):
        h = hashlib.sha256()
        for op in self.workload.history.operations():
            h.update(repr((op.id, op.client, op.kind, op.key, op.value, op.output,
                           op.call, op.ret)).encode())
        h.update(repr((self.scheduler.events_run, self.scheduler.now,
                       self.cluster.network.sent)).encode())
        for node_id in self.cluster.node_ids:
            node = self.cluster.node(node_id)
            h.update(repr((node_id, node.storage.applied_index(), node.disk.fsyncs)).encode())
        return h.hexdigest()[:16]


def _same_write(entry_data, data):
    """Whether a log entry is the client's write ``data``: equal but for
    the proposal id a follower adds when it forwards the write."""
    if entry_data == data:
        return True
    try:
        return without_proposal_id(entry_data) == without_proposal_id(data)
    except Exception:  # not a Command at all
        return False


def run_seed(seed, nodes=3, config=None, trace=None):
    """Run one seed; returns a `SimResult`."""
    return Simulation(seed, nodes, config, trace).run()


def find_failing_seed(seeds, nodes=3, config_factory=SimConfig):
    """Run ``seeds`` in order and return the first failing `SimResult`, or
    None.  ``config_factory()`` makes a fresh config per seed."""
    for seed in seeds:
        size = nodes(seed) if callable(nodes) else nodes
        result = run_seed(seed, size, config_factory())
        if not result.ok:
            return result
    return None


# -- the command line


def _sizes(text):
    sizes = [int(s) for s in text.split(",") if s]
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError("--nodes takes sizes like 3, 5 or 3,5")
    return sizes


def replay_command(seed, nodes, run_time=None, swarm=True, write_behind=0):
    cmd = "python -m geocachedb.testing.sim --seed %d --nodes %d" % (seed, nodes)
    if run_time is not None and run_time != SimConfig.run_time:
        cmd += " --time %d" % run_time
    if not swarm:
        cmd += " --no-swarm"
    if write_behind:
        cmd += " --write-behind %d" % write_behind
    return cmd + " -v"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m geocachedb.testing.sim",
        description="Run the deterministic Raft cluster simulator over many seeds.",
    )
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, default=None, help="run only this seed")
    parser.add_argument("--nodes", type=_sizes, default=[3, 5],
                        help="cluster size, or sizes alternating by seed (default 3,5)")
    parser.add_argument("--time", type=int, default=SimConfig.run_time,
                        help="virtual time under faults per seed (default %(default)s)")
    parser.add_argument("--no-swarm", dest="swarm", action="store_false",
                        help="every fault kind at its default weight in every seed "
                             "(default: each seed draws its own mix)")
    parser.add_argument("--write-behind", type=int, default=0, metavar="KEYS",
                        help="state machines keep up to KEYS applied keys in memory before writing "
                             "them to storage, lost in a crash, as real nodes do (default 0: write "
                             "every batch at once)")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per seed, details of failures")
    parser.add_argument("--trace", action="store_true", help="print the timeline of the run (with --seed)")
    args = parser.parse_args(argv)

    if args.seed is not None:
        seeds = [args.seed]
    else:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
    started = time.perf_counter()
    totals = {"ops": {}, "faults": {}, "admin": {}, "messages": 0, "storage": {}, "forwarded": 0}
    by_size = {}
    failures = []
    for seed in seeds:
        size = args.nodes[seed % len(args.nodes)]
        config = SimConfig(run_time=args.time, swarm=args.swarm,
                           cluster=ClusterConfig(write_behind=args.write_behind))
        trace = print if args.trace else None
        result = run_seed(seed, size, config, trace)
        by_size[size] = by_size.get(size, 0) + 1
        for k, v in result.admin.items():
            totals["admin"][k] = totals["admin"].get(k, 0) + v
        for k, v in result.ops.items():
            totals["ops"][k] = totals["ops"].get(k, 0) + v
        for k, v in result.faults.items():
            totals["faults"][k] = totals["faults"].get(k, 0) + v
        totals["messages"] += result.messages
        totals["forwarded"] += result.forwarded
        for k, v in result.storage_events.items():
            totals["storage"][k] = totals["storage"].get(k, 0) + v
        if args.verbose:
            print("seed %d (%d nodes): %s, %d ops, %d faults, %d messages, %.2fs, fingerprint %s"
                  % (seed, size, "ok" if result.ok else "FAIL", result.operations,
                     sum(result.faults.values()), result.messages, result.wall,
                     result.fingerprint))
        if not result.ok:
            failures.append(result)
            print("FAIL seed %d (%d nodes):" % (seed, size))
            for violation in result.violations[: (20 if args.verbose else 3)]:
                text = str(violation)
                if not args.verbose and len(text) > 2000:
                    text = text[:2000] + " ..."
                print("  " + text.replace("\n", "\n  "))
            print("  replay: " + replay_command(seed, size, args.time, args.swarm, args.write_behind))
            sys.stdout.flush()
    wall = time.perf_counter() - started

    ops = totals["ops"]
    faults = totals["faults"]
    print("seeds run: %d (%s)" % (len(seeds), ", ".join(
        "%d nodes: %d" % (s, n) for s, n in sorted(by_size.items()))))
    print("operations: %d (ok %d, unknown outcome %d, failed reads %d, redirects %d)" % (
        ops.get("invoked", 0), ops.get("ok", 0), ops.get("unknown", 0),
        ops.get("failed", 0), ops.get("redirects", 0)))
    print("forwarded: %d (requests and writes followers sent to the leader)" % totals["forwarded"])
    print("messages sent: %d" % totals["messages"])
    print("disk: %s" % ", ".join("%s %d" % kv for kv in totals["storage"].items()))
    print("faults injected: %d (%s)" % (sum(faults.values()), ", ".join(
        "%s %d" % (k, faults.get(k, 0)) for k in KINDS)))
    admin = totals["admin"]
    print("operator commands: %d (%s)" % (sum(admin.values()), ", ".join(
        "%s %d" % (k, admin.get(k, 0)) for k in ADMIN_KINDS)))
    print("violations: %d%s" % (len(failures), "" if not failures else " (seeds: %s)" % ", ".join(
        str(r.seed) for r in failures[:50])))
    print("wall time: %.1fs" % wall)
    if failures:
        first = failures[0]
        print("replay the first failure: " + replay_command(first.seed, first.nodes, args.time, args.swarm, args.write_behind))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
