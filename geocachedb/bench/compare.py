"""``geocache-bench compare-etcd``: etcd 3.4 and geocachedb side by side.

    geocache-bench compare-etcd                        # 3 vs 3 nodes, puts at 1,16,64,256; gets at 64
    geocache-bench compare-etcd --duration 3 --concurrency 16,64
    geocache-bench compare-etcd --single-node          # 1 vs 1 node, puts at 256
    geocache-bench compare-etcd --json > result.json

Starts an etcd cluster (`etcd_cluster`) and a geocachedb cluster
(`geocachedb.harness.processes.Cluster`) of the same size on 127.0.0.1,
each member with its own data directory under one temporary directory (one
disk, fsync on for both), and drives them one after the other, level by
level, with the same generator: ``geocache-bench`` in a separate process,
``--protocol etcd`` or ``geocache``, the same keys, values, concurrency and
connections, connections spread over the members with the leader first.
Within a level the system that goes first alternates, so a drift in the
machine's background load does not always favour the same side.

Per level it prints one table: ops/s, latency p50/p99, server CPU per
operation (user + system CPU time of every member process over the load
window, from /proc, divided by the completed operations) with the per-node
split, errors, and the ratio geocachedb ÷ etcd.  Everything it started is
stopped by PID in ``finally``; the data directories are removed unless
``--keep``.

Exit status: 0 after the comparison, 2 when etcd (or grpcio) is missing or
a cluster does not come up.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import twisted

import geocachedb
from geocachedb.bench.etcd_cluster import HOW_TO_GET_ETCD, EtcdCluster, etcd_version, find_etcd
from geocachedb.bench.load import WINDOW_END, WINDOW_START
from geocachedb.harness import procstat
from geocachedb.harness.processes import Cluster, admin_command


class EtcdSystem:
    name = "etcd"
    protocol = "etcd"

    def __init__(self, base_dir, nodes, binary, version):
        self.label = "etcd %s" % version
        self.cluster = EtcdCluster(os.path.join(base_dir, "etcd"), nodes, binary)

    def start(self):
        self.cluster.start()

    def stop(self):
        self.cluster.stop_all()

    def leader(self):
        return self.cluster.leader(timeout=20)

    def pids(self):
        return {name: m.pid for name, m in self.cluster.members.items()}

    def fsyncs(self, name):
        """(WAL fsyncs, seconds spent in them) of member ``name``, from its
        Prometheus metrics (etcd_disk_wal_fsync_duration_seconds)."""
        url = "http://%s/metrics" % self.address(name)
        with urllib.request.urlopen(url, timeout=5) as f:
            text = f.read().decode("utf-8", "replace")
        values = dict(re.findall(r"^etcd_disk_wal_fsync_duration_seconds_(count|sum) (\S+)$", text, re.M))
        return int(float(values.get("count", 0))), float(values.get("sum", 0.0))

    def address(self, name):
        return self.cluster[name].address


class GeocacheSystem:
    name = "geocachedb"
    protocol = "geocache"

    def __init__(self, base_dir, nodes, storage):
        self.label = "geocachedb %s" % geocachedb.__version__
        # The admin shell stays on (loopback, a generated password) for `stats`.
        self.cluster = Cluster(os.path.join(base_dir, "geocachedb"), nodes, extra=("--storage", storage))

    def start(self):
        self.cluster.start()
        self.cluster.leader(timeout=30)

    def stop(self):
        self.cluster.stop_all()

    def leader(self):
        return self.cluster.leader(timeout=20)

    def pids(self):
        return {name: n.pid for name, n in self.cluster.nodes.items()}

    def fsyncs(self, name):
        """(Raft log fsyncs, seconds spent in them) of node ``name``, from
        the admin ``stats`` (None for what it does not report)."""
        out = admin_command(self.cluster[name], "stats")
        m = re.search(r"^\s*fsyncs\s+([\d,]+)", out, re.M)
        t = re.search(r"^\s*fsync time \(ms\)\s+total ([\d.]+)", out, re.M)
        return ((int(m.group(1).replace(",", "")) if m else None),
                (float(t.group(1)) / 1e3 if t else None))

    def address(self, name):
        return self.cluster[name].address


def auto_connections(concurrency):
    """One connection per 16 requests in flight, 1 to 8 (as bench/cluster_bench.py)."""
    return max(1, min(8, concurrency // 16))


def run_load(system, args, concurrency, read_ratio=0.0, keyspace=None, duration=None, ops=None,
             key_order="random", write_op="put"):
    """Run ``geocache-bench`` against ``system``; its JSON plus the servers'
    CPU time over the run, per node, and who led."""
    leader = system.leader()
    pids = system.pids()
    order = [leader] + sorted(n for n in pids if n != leader)
    connections = args.connections or auto_connections(concurrency)
    cmd = [
        sys.executable, "-m", "geocachedb.bench.cli",
        "--protocol", system.protocol,
        "--endpoints", ",".join(system.address(n) for n in order),
        "--concurrency", str(concurrency),
        "--connections", str(connections),
        "--key-size", str(args.key_size),
        "--value-size", str(args.value_size),
        "--keyspace", str(keyspace or args.keyspace),
        "--read-ratio", str(read_ratio),
        "--consistency", "linearizable",
        "--key-order", key_order,
        "--write-op", write_op,
        "--procs", str(args.procs),
        "--json",
    ]
    cmd += ["--ops", str(ops)] if ops is not None else ["--duration", str(duration)]
    cmd.append("--mark-window")
    limit = (duration or 60.0) + 60.0
    sample = lambda: {n: procstat.cpu_seconds(pid) for n, pid in pids.items()}  # noqa: E731
    fsyncs_before = _fsyncs(system, leader)
    before = sample()
    after = None
    marked = False
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    killer = threading.Timer(limit, proc.kill)
    killer.start()
    try:
        # Sample the servers' CPU at the generator's own window marks, so its
        # start-up (imports, connecting) is not charged to the servers.
        other = []
        for line in proc.stderr:
            if line == WINDOW_START:
                if not marked:  # with --procs N: the first start, the last end
                    before, marked = sample(), True
            elif line == WINDOW_END:
                after = sample()
            else:
                other.append(line)
        stdout = proc.stdout.read()
        proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wall = time.monotonic() - started
    fsyncs_after = _fsyncs(system, leader)
    if after is None:
        after = sample()
    stderr = b"".join(other).decode("utf-8", "replace").strip()
    if proc.returncode not in (0, 1):
        raise RuntimeError("%s load failed (exit %d): %s" % (system.name, proc.returncode, stderr))
    result = json.loads(stdout)
    cpu = {n: after[n] - before[n] for n in order}
    done = max(1, result["ops"])
    result.update(
        system=system.name,
        label=system.label,
        leader=leader,
        leader_after=system.leader(),
        nodes=order,
        wall_seconds=round(wall, 3),
        server_cpu_seconds={n: round(c, 3) for n, c in cpu.items()},
        server_cpu_us_per_op=round(1e6 * sum(cpu.values()) / done, 1),
        server_cpu_us_per_op_by_node={n: round(1e6 * c / done, 1) for n, c in cpu.items()},
        server_rss_mb={n: round(procstat.rss_bytes(pid) / 2**20, 1) for n, pid in pids.items()},
    )
    if fsyncs_before[0] is not None and fsyncs_after[0] is not None:
        count = fsyncs_after[0] - fsyncs_before[0]
        result["leader_fsyncs"] = count
        result["puts_per_leader_fsync"] = round(result["puts"] / count, 1) if count else None
        if fsyncs_before[1] is not None and count:
            result["leader_fsync_mean_ms"] = round(1e3 * (fsyncs_after[1] - fsyncs_before[1]) / count, 3)
    return result


def _fsyncs(system, name):
    try:
        return system.fsyncs(name)
    except Exception:  # a figure we can do without
        return None, None


def idle_cpu(system, seconds=2.0):
    """Server CPU ms per second with no load (heartbeats, timers)."""
    pids = system.pids()
    before = sum(procstat.cpu_seconds(p) for p in pids.values())
    time.sleep(seconds)
    return round(1000.0 * (sum(procstat.cpu_seconds(p) for p in pids.values()) - before) / seconds, 1)


def _num(x, digits=1):
    if x is None:
        return "-"
    return "{:,.{d}f}".format(x, d=digits)


def _ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "-"


def _split(r):
    by = r["server_cpu_us_per_op_by_node"]
    return " / ".join("%s %.0f" % ("L" if n == r["leader"] else "F", by[n]) for n in r["nodes"])


def format_level(etcd, geo):
    """One table: the two systems and the ratio geocachedb ÷ etcd."""
    kind = "writes" if etcd["gets"] == 0 else "ops"
    rows = [
        ("%s/s" % ("puts" if kind == "writes" else "gets"), etcd["ops_per_sec"], geo["ops_per_sec"], 0),
        ("latency p50 ms", etcd["latency_ms"]["p50"], geo["latency_ms"]["p50"], 2),
        ("latency p99 ms", etcd["latency_ms"]["p99"], geo["latency_ms"]["p99"], 2),
        ("latency p99.9 ms", etcd["latency_ms"]["p99.9"], geo["latency_ms"]["p99.9"], 2),
        ("server CPU us/%s (sum)" % kind[:-1], etcd["server_cpu_us_per_op"], geo["server_cpu_us_per_op"], 1),
    ]
    w1, w2 = max(14, len(etcd["label"])), max(14, len(geo["label"]))
    lines = ["  %-26s %*s  %*s  %10s" % ("", w1, etcd["label"], w2, geo["label"], "geo/etcd")]
    for name, a, b, digits in rows:
        lines.append("  %-26s %*s  %*s  %10s" % (name, w1, _num(a, digits), w2, _num(b, digits), _ratio(b, a)))
    lines.append("  %-26s %*s  %*s" % ("  per node (L=leader)", w1, _split(etcd), w2, _split(geo)))
    def fsync_text(r):
        if r.get("leader_fsyncs") is None:
            return "-"
        text = "%d" % r["leader_fsyncs"]
        if r.get("puts_per_leader_fsync"):
            text += ", %.1f puts each" % r["puts_per_leader_fsync"]
        if r.get("leader_fsync_mean_ms") is not None:
            text += ", %.2f ms" % r["leader_fsync_mean_ms"]
        return text

    lines.append("  %-26s %*s  %*s" % ("leader log fsyncs", w1, fsync_text(etcd), w2, fsync_text(geo)))
    rss = [" / ".join("%.0f" % r["server_rss_mb"][n] for n in r["nodes"]) for r in (etcd, geo)]
    lines.append("  %-26s %*s  %*s" % ("  RSS MB per node after", w1, rss[0], w2, rss[1]))
    errs = [", ".join("%s=%d" % kv for kv in sorted(r["errors"].items())) or "none" for r in (etcd, geo)]
    lines.append("  %-26s %*s  %*s" % ("errors", w1, errs[0], w2, errs[1]))
    lines.append("  %-26s %*s  %*s" % ("load generator CPU %", w1, _num(etcd["client_cpu_percent"]),
                                       w2, _num(geo["client_cpu_percent"])))
    for r in (etcd, geo):
        if r["leader_after"] != r["leader"]:
            lines.append("  note: %s's leader changed during the run (%s -> %s)" % (r["label"], r["leader"], r["leader_after"]))
    return "\n".join(lines)


def format_summary(levels):
    lines = ["summary (ratio = geocachedb / etcd; above 1 is better for ops/s, worse for latency and CPU)",
             "  %-22s %9s %9s %6s  %8s %8s %6s  %8s %8s %6s" % (
                 "level", "etcd/s", "geo/s", "ratio", "etcd p99", "geo p99", "ratio", "etcd us", "geo us", "ratio")]
    for title, e, g in levels:
        lines.append("  %-22s %9s %9s %6s  %8s %8s %6s  %8s %8s %6s" % (
            title, _num(e["ops_per_sec"], 0), _num(g["ops_per_sec"], 0), _ratio(g["ops_per_sec"], e["ops_per_sec"]),
            _num(e["latency_ms"]["p99"], 1), _num(g["latency_ms"]["p99"], 1),
            _ratio(g["latency_ms"]["p99"], e["latency_ms"]["p99"]),
            _num(e["server_cpu_us_per_op"], 0), _num(g["server_cpu_us_per_op"], 0),
            _ratio(g["server_cpu_us_per_op"], e["server_cpu_us_per_op"])))
    return "\n".join(lines)


def _levels(text, name):
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("%s: a comma-separated list of integers" % name)
    if any(c < 1 for c in levels):
        raise argparse.ArgumentTypeError("%s: levels must be at least 1" % name)
    return levels


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="geocache-bench compare-etcd",
        description="Start an etcd 3.4 cluster and a geocachedb cluster on 127.0.0.1 and load both the same way.",
    )
    p.add_argument("--single-node", action="store_true",
                   help="1 etcd member vs 1 geocachedb node (default levels: puts at 256, no gets)")
    p.add_argument("--concurrency", default=None,
                   help="put levels, requests in flight (default 1,16,64,256; 256 with --single-node)")
    p.add_argument("--read-concurrency", default=None,
                   help="linearizable get levels (default 64; none with --single-node; '' for none)")
    p.add_argument("--txn-concurrency", default="",
                   help="compare-and-put txn levels (one compare + one put), e.g. 64 (default: none)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per level and system (default 10)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of puts before the first level (default 1)")
    p.add_argument("--connections", type=int, default=0,
                   help="connections per run (default: one per 16 in flight, 1 to 8)")
    p.add_argument("--procs", type=int, default=1, help="load processes per run (default 1)")
    p.add_argument("--key-size", type=int, default=16)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--keyspace", type=int, default=100000, help="keys for the put levels (default 100000)")
    p.add_argument("--read-keyspace", type=int, default=10000,
                   help="keys written once before the get levels and then read (default 10000)")
    p.add_argument("--storage", default="lmdb", help="geocachedb storage backend (default lmdb)")
    p.add_argument("--etcd", default=None, help="the etcd binary (default: etcd on PATH)")
    p.add_argument("--base-dir", default=None,
                   help="where to make the temporary data directory (default: the system temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    p.add_argument("--json", action="store_true", help="print every result as one JSON object at the end")
    args = p.parse_args(argv)
    try:
        args.put_levels = _levels(args.concurrency if args.concurrency is not None
                                  else ("256" if args.single_node else "1,16,64,256"), "--concurrency")
        args.get_levels = _levels(args.read_concurrency if args.read_concurrency is not None
                                  else ("" if args.single_node else "64"), "--read-concurrency")
        args.txn_levels = _levels(args.txn_concurrency, "--txn-concurrency")
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    if args.duration <= 0 or args.duration > 600:
        p.error("--duration must be in (0, 600] seconds")
    return args


def source_version():
    """Which geocachedb code the nodes run: the commit of the tree it is
    imported from and how many of its files differ from that commit (the
    nodes import the same tree: they inherit sys.path and PYTHONPATH)."""
    tree = os.path.dirname(os.path.dirname(os.path.abspath(geocachedb.__file__)))
    try:
        commit = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--untracked-files=no",
                                "--", "geocachedb", "twisted"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {"tree": tree, "commit": None, "modified_files": None}
    return {"tree": tree, "commit": commit or None,
            "modified_files": len(dirty.splitlines()) if commit else None}


def describe_source(v):
    if not v["commit"]:
        return "from %s" % v["tree"]
    if v["modified_files"]:
        return "commit %s + uncommitted changes to %d file(s) in %s" % (v["commit"], v["modified_files"], v["tree"])
    return "commit %s, clean, in %s" % (v["commit"], v["tree"])


def machine_facts():
    facts = {"nproc": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
             "geocachedb_source": source_version(),
             "python": sys.version.split()[0], "twisted": twisted.__version__}
    try:
        import grpc

        facts["grpcio"] = grpc.__version__
    except ImportError:
        pass
    return facts


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    binary = find_etcd(args.etcd)
    if binary is None:
        print(HOW_TO_GET_ETCD, file=sys.stderr)
        return 2
    try:
        import grpc  # noqa: F401
    except ImportError:
        print("compare-etcd needs grpcio to talk to etcd: pip install 'geocachedb[bench]' (or grpcio)", file=sys.stderr)
        return 2
    version = etcd_version(binary)
    nodes = 1 if args.single_node else 3
    out = sys.stderr if args.json else sys.stdout

    def say(text=""):
        print(text, file=out, flush=True)

    facts = machine_facts()
    say("compare-etcd: %d node(s) each; %s (%s) vs geocachedb %s; Python %s, Twisted %s; %s cores, load average %s"
        % (nodes, "etcd " + version, binary, geocachedb.__version__, facts["python"], facts["twisted"],
           facts["nproc"], " ".join("%.2f" % x for x in facts["loadavg"])))
    say("geocachedb code: %s" % describe_source(facts["geocachedb_source"]))
    base = tempfile.mkdtemp(prefix="geocache-compare-", dir=args.base_dir)
    systems = [EtcdSystem(base, nodes, binary, version), GeocacheSystem(base, nodes, args.storage)]
    report = {"facts": facts, "etcd_version": version, "nodes": nodes, "base_dir": base, "levels": []}
    started = []
    try:
        for s in systems:
            started.append(s)
            try:
                s.start()
            except RuntimeError as e:
                print("compare-etcd: %s did not start: %s" % (s.label, e), file=sys.stderr)
                return 2
        report["idle_cpu_ms_per_s"] = {s.name: idle_cpu(s) for s in systems}
        say("data under %s (one disk, fsync on); idle server CPU: %s" % (
            base, ", ".join("%s %.1f ms/s" % (s.name, report["idle_cpu_ms_per_s"][s.name]) for s in systems)))
        if args.warmup > 0:
            for s in systems:
                run_load(s, args, 16, duration=args.warmup)
        plan = [("puts", c, 0.0) for c in args.put_levels] + [("gets", c, 1.0) for c in args.get_levels] \
            + [("txns", c, 0.0) for c in args.txn_levels]
        filled = False
        summary = []
        for index, (mix, concurrency, ratio) in enumerate(plan):
            if mix == "gets" and not filled:
                for s in systems:  # every key of the read keyspace exists on both sides
                    run_load(s, args, 256, keyspace=args.read_keyspace, ops=args.read_keyspace,
                             key_order="sequential")
                filled = True
            order = systems if index % 2 == 0 else systems[::-1]
            results = {}
            for s in order:
                results[s.name] = run_load(
                    s, args, concurrency, read_ratio=ratio, duration=args.duration,
                    keyspace=args.read_keyspace if mix == "gets" else args.keyspace,
                    write_op="txn" if mix == "txns" else "put")
            etcd, geo = results["etcd"], results["geocachedb"]
            title = "%d node%s, %s%s, %d in flight" % (
                nodes, "s" if nodes > 1 else "", "linearizable " if mix == "gets" else "", mix, concurrency)
            say("")
            say("%s (%d connection(s), %g s each, %s first, %d B keys, %d B values)" % (
                title, args.connections or auto_connections(concurrency), args.duration,
                order[0].name, args.key_size, args.value_size))
            say(format_level(etcd, geo))
            summary.append(("%s %s@%d" % ("3n" if nodes == 3 else "1n", mix, concurrency), etcd, geo))
            report["levels"].append({"mix": mix, "concurrency": concurrency, "first": order[0].name,
                                     "etcd": etcd, "geocachedb": geo})
        report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        say("")
        say(format_summary(summary))
        say("load average before %s, after %s" % (
            " ".join("%.2f" % x for x in facts["loadavg"]), " ".join("%.2f" % x for x in report["loadavg_after"])))
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print("compare-etcd: %s" % e, file=sys.stderr)
        return 2
    finally:
        for s in reversed(started):
            s.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            say("kept %s" % base)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
