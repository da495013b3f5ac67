"""Where a geocachedb node's CPU goes under a write load: py-spy on the
leader (or, with ``--target follower``, a follower) of a real cluster
while ``geocache-bench`` loads it.

    python -m geocachedb.bench.profile                       # 3 nodes, puts at 64 in flight, 10 s
    python -m geocachedb.bench.profile --concurrency 256 --raw leader.txt

Starts a cluster (`geocachedb.harness.processes.Cluster`) on 127.0.0.1,
runs the load a little longer than the profile, and has
``py-spy record --format raw --nonblocking`` sample the leader's Python
threads in the middle of it.  Prints the load's figures, the leader's CPU
µs per write, writes per fsync (from the admin ``stats``), and the top
functions by own samples and by inclusive samples, each as a share of the
leader's busy samples.  Needs py-spy (``pip install 'geocachedb[bench]'``)
and the right to ptrace (root, or ``kernel.yama.ptrace_scope=0``).
Stops every node it started, by PID, in ``finally``.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

from geocachedb.bench.compare import auto_connections, describe_source, source_version
from geocachedb.bench.load import WINDOW_END, WINDOW_START
from geocachedb.harness import procstat
from geocachedb.harness.processes import Cluster, admin_command

_LINE = re.compile(r":\d+\)$")


def frame_name(frame):
    """``"data_received (twisted/internet/tcp.py:123)"`` -> the same
    without the line number (samples of one function add up)."""
    return _LINE.sub(")", frame.strip())


def main_thread_only(lines):
    """From raw output recorded with ``--threads`` (each stack starts with a
    ``thread (TID): NAME`` frame): the main thread's samples, that frame
    removed.  Idle worker threads (a thread pool waiting on its queue)
    would otherwise swamp an ``--idle`` profile."""
    out = []
    for line in lines:
        first, sep, rest = line.partition(";")
        if first.startswith("thread ("):
            if "MainThread" in first and sep:
                out.append(rest)
        else:
            out.append(line)
    return out


def summarize_raw(lines):
    """Self and inclusive sample counts per function from py-spy's raw
    (collapsed stack) output: ``frame;frame;...;frame COUNT`` per line."""
    own, inclusive = Counter(), Counter()
    total = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    return total, own, inclusive


# Stages of a write on the leader, checked in this order against every frame
# of a sample's stack (the first that matches takes the sample).
STAGES = (
    ("apply: state machine + LMDB transaction", ("Replica._apply", "statemachine.py", "storage/lmdb.py")),
    ("Raft log: WAL append + fdatasync", ("wal/log.py",)),
    ("Raft core (geocachedb/raft)", ("geocachedb/raft/",)),
    ("peer messages: encode, decode, send, forwarded requests", ("node/peers.py", "raft_codec")),
    ("client requests: parse, dispatch, reply", ("client_protocol.py", "kvservice.py")),
    ("replica/node glue (Ready loop, timers)", ("replica.py", "node/node.py")),
    ("Twisted reactor and socket I/O", ("twisted/",)),
)


def by_stage(lines):
    """Samples per write stage (`STAGES`) from py-spy raw output."""
    counts = Counter()
    for line in lines:
        stack, _, count = line.strip().rpartition(" ")
        if not count.isdigit():
            continue
        for name, needles in STAGES:
            if any(n in stack for n in needles):
                counts[name] += int(count)
                break
        else:
            counts["other"] += int(count)
    return counts


def fsyncs(node):
    """The node's log fsync count, from the admin shell's ``stats``."""
    out = admin_command(node, "stats")
    m = re.search(r"^\s*fsyncs\s+([\d,]+)", out, re.M)
    return int(m.group(1).replace(",", "")) if m else None


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m geocachedb.bench.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--connections", type=int, default=0)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of profile (the load runs 4 s longer)")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    p.add_argument("--read-ratio", type=float, default=0.0)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--idle", action="store_true",
                   help="the wall profile keeps the main thread's idle samples too (waiting in epoll), so its shares are of all its time")
    p.add_argument("--raw", default=None, help="keep py-spy's raw output in this file")
    p.add_argument("--target", choices=("leader", "follower"), default="leader",
                   help="which node py-spy samples (follower: the first follower, which forwards its clients' writes)")
    p.add_argument("--py-spy", default=None, help="the py-spy binary (default: next to python, or on PATH)")
    args = p.parse_args(argv)
    pyspy = args.py_spy or shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if pyspy is None:
        print("needs py-spy: pip install py-spy (or 'geocachedb[bench]')", file=sys.stderr)
        return 2
    base = tempfile.mkdtemp(prefix="geocache-profile-")
    raw_path = args.raw or os.path.join(base, "%s.raw.txt" % args.target)
    gil_path = raw_path + ".gil"
    cluster = Cluster(os.path.join(base, "cluster"), args.nodes)
    bench = None
    try:
        cluster.start()
        leader = cluster.leader(timeout=30)
        order = [leader] + sorted(n for n in cluster.nodes if n != leader)
        node = cluster[order[1] if args.target == "follower" and len(order) > 1 else leader]
        fsyncs_before = fsyncs(node)
        cmd = [sys.executable, "-m", "geocachedb.bench.cli",
               "--endpoints", ",".join(cluster[n].address for n in order),
               "--concurrency", str(args.concurrency),
               "--connections", str(args.connections or auto_connections(args.concurrency)),
               "--duration", str(args.duration + 4), "--read-ratio", str(args.read_ratio),
               "--mark-window", "--json"]
        bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert bench.stderr.readline() == WINDOW_START, "the load did not start"
        cpu_before = {n: procstat.cpu_seconds(cluster[n].pid) for n in order}
        time.sleep(2.0)
        sampled_times0 = procstat.cpu_times(node.pid)
        # Two samplers at once: every sample of an active thread (wall time,
        # blocking syscalls such as fdatasync included) and only the samples
        # that hold the GIL (Python code running: close to CPU time).
        spies = [subprocess.Popen([pyspy, "record", "--pid", str(node.pid), "--duration", str(int(args.duration)),
                                   "--rate", str(args.rate), "--format", "raw", "--nonblocking",
                                   "--output", path] + flags,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                 for path, flags in ((raw_path, ["--idle", "--threads"] if args.idle else []), (gil_path, ["--gil"]))]
        for spy in spies:
            spy_out = spy.communicate(timeout=args.duration + 60)[0]
            if spy.returncode != 0:
                print("py-spy failed: %s" % spy_out.decode("utf-8", "replace").strip(), file=sys.stderr)
                return 2
        sampled_user, sampled_sys = (b - a for a, b in zip(sampled_times0, procstat.cpu_times(node.pid)))
        sampled_cpu = sampled_user + sampled_sys
        rest = bench.stderr.read()
        cpu_after = {n: procstat.cpu_seconds(cluster[n].pid) for n in order}
        result = json.loads(bench.stdout.read())
        bench.wait(30)
        if WINDOW_END not in rest:
            print("the load did not finish cleanly: %s" % rest.decode("utf-8", "replace"), file=sys.stderr)
        fsyncs_after = fsyncs(node)
        with open(raw_path) as f:
            lines = f.readlines()
        if args.idle:
            lines = main_thread_only(lines)
        wall_profile = summarize_raw(lines) + (by_stage(lines),)
        with open(gil_path) as f:
            lines = f.readlines()
        gil_profile = summarize_raw(lines) + (by_stage(lines),)
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
            bench.wait()
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)  # the cluster's data (and the raw profiles unless --raw)
    ops = max(1, result["ops"])
    writes = max(1, result["puts"])
    print("geocachedb code: %s; load average %s" % (
        describe_source(source_version()), " ".join("%.2f" % x for x in os.getloadavg())))
    print("%d nodes, %s at %d in flight: %.0f ops/s, p50 %.2f ms, p99 %.2f ms, errors %s"
          % (args.nodes, "puts" if args.read_ratio == 0 else "mix", args.concurrency, result["ops_per_sec"],
             result["latency_ms"]["p50"], result["latency_ms"]["p99"], result["errors"] or "none"))
    print("server CPU us/op over the load: %s (L = leader %s)" % (
        " / ".join("%s %.1f" % ("L" if n == leader else "F", 1e6 * (cpu_after[n] - cpu_before[n]) / ops)
                   for n in order), leader))
    if fsyncs_before is not None and fsyncs_after is not None and fsyncs_after > fsyncs_before:
        print("leader log fsyncs: %d for %d writes (%.1f writes per fsync)" % (
            fsyncs_after - fsyncs_before, writes, writes / (fsyncs_after - fsyncs_before)))
    wall = int(args.duration)
    print("%s CPU while sampled: %.2f s in %d s (%.0f%% of one core): user %.2f s, system %.2f s"
          % (args.target, sampled_cpu, wall, 100.0 * sampled_cpu / wall, sampled_user, sampled_sys))
    for title, (total, own, inclusive, stages) in (
        ("GIL held (Python running: on-CPU time)", gil_profile),
        ("the main (reactor) thread, idle samples included (wall time)" if args.idle else
         "active threads (wall time, blocking syscalls such as fdatasync included)", wall_profile),
    ):
        print("\n== %s: %d samples in %d s at %d Hz = %.0f%% of the time" % (
            title, total, wall, args.rate, 100.0 * total / (args.rate * wall)))
        print("by stage of a write")
        for name, n in stages.most_common():
            print("  %5.1f%%  %s" % (100.0 * n / max(1, total), name))
        print("top %d by own samples (the function itself)" % args.top)
        for name, n in own.most_common(args.top):
            print("  %5.1f%%  %s" % (100.0 * n / max(1, total), name))
        print("top %d by inclusive samples (with what it calls; stack roots left out)" % args.top)
        shown = [(name, n) for name, n in inclusive.most_common() if n < 0.95 * total][: args.top]
        for name, n in shown:
            print("  %5.1f%%  %s" % (100.0 * n / max(1, total), name))
    if args.raw:
        print("\nraw profiles kept in %s and %s" % (raw_path, gil_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
