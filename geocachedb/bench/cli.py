"""``geocache-bench``: drive a geocachedb (or etcd) cluster and report
throughput and latency.

    geocache-bench --endpoints 127.0.0.1:50051 --concurrency 64 --duration 10
    geocache-bench --endpoints ... --read-ratio 1.0 --consistency serializable --json
    geocache-bench --protocol etcd --endpoints 127.0.0.1:2379 --concurrency 64
    geocache-bench compare-etcd --help      # etcd 3.4 and geocachedb side by side

With ``--procs N`` the load comes from N processes (each with its share of
``--concurrency`` and ``--connections``) so the Python generator is not the
bottleneck.  On a terminal a progress line redraws in place; ``--json``
prints one machine-readable object instead of the table.

Exit status: 0 after a run, 1 when a run completed no operation at all
(every request failed), 2 for a usage error or when the load could not
start (an endpoint that does not answer, a missing dependency).
"""

import argparse
import array
import asyncio
import json
import multiprocessing
import sys
import time

from geocachedb.bench.load import PROTOCOLS, BenchError, LoadSpec, run_load
from geocachedb.net import parse_address

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))


def _child(spec, progress, index, conn):
    try:
        result = asyncio.run(run_load(spec, progress, index))
        result["latencies"] = result["latencies"].tobytes()
        conn.send(result)
    except BenchError as e:
        conn.send({"error": str(e)})
    except Exception as e:  # reported by the parent
        conn.send({"error": "%s: %s" % (type(e).__name__, e)})
    finally:
        conn.close()


def split(total, parts, index):
    return total // parts + (1 if index < total % parts else 0)


def run(args, out=sys.stdout):
    endpoints = [e for e in args.endpoints.split(",") if e]
    procs = max(1, args.procs)
    ctx = multiprocessing.get_context("fork")
    progress = ctx.Array("q", 2 * procs, lock=False)  # ops done, errors: per process
    children = []
    for i in range(procs):
        spec = LoadSpec(
            endpoints,
            connections=max(1, split(max(args.connections, procs), procs, i)),
            concurrency=max(1, split(args.concurrency, procs, i)),
            duration=args.duration,
            ops=None if args.ops is None else split(args.ops, procs, i),
            key_size=args.key_size,
            value_size=args.value_size,
            keyspace=args.keyspace,
            read_ratio=args.read_ratio,
            consistency=args.consistency,
            seed=None if args.seed is None else args.seed + i,
            protocol=args.protocol,
            write_op=args.write_op,
            key_order=args.key_order,
            key_start=i,
            key_step=procs,
            stall_timeout=args.stall_timeout,
            mark_window=args.mark_window,
        )
        parent_end, child_end = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(spec, progress, i, child_end), daemon=True)
        p.start()
        child_end.close()
        children.append((p, parent_end))
    started = time.monotonic()
    live = out.isatty() and not args.json
    results = []
    last_ops, last_t = 0, started
    pending = list(children)
    while pending:
        for p, conn in list(pending):
            if conn.poll(0.25 / len(pending)):
                try:
                    results.append(conn.recv())
                except EOFError:
                    results.append({"error": "load process %d exited with status %s" % (p.pid, p.exitcode)})
                p.join(5)
                pending.remove((p, conn))
                if "error" in results[-1]:
                    # No point loading with the others: stop them now.
                    for q, _ in pending:
                        q.terminate()
                        q.join(5)
                    pending = []
                    break
        now = time.monotonic()
        if live and now - last_t >= 0.5:
            done = sum(progress[0::2])
            errs = sum(progress[1::2])
            rate = (done - last_ops) / (now - last_t)
            out.write("\r%6.1fs  %10d ops  %9.0f ops/s  %8d errors  " % (now - started, done, rate, errs))
            out.flush()
            last_ops, last_t = done, now
    if live:
        out.write("\r" + " " * 70 + "\r")
    failed = [r["error"] for r in results if "error" in r]
    if failed:
        print("geocache-bench: %s" % failed[0], file=sys.stderr)
        return 2
    summary = summarize(results, args)
    if args.json:
        print(json.dumps(summary), file=out)
    else:
        print_table(summary, out)
    return 1 if summary["ops"] == 0 and summary["errors_total"] else 0


def summarize(results, args):
    latencies = array.array("d")
    errors = {}
    ops = 0
    elapsed = 0.0
    cpu = 0.0
    counts = {"put": 0, "get": 0}
    for r in results:
        lat = array.array("d")
        lat.frombytes(r["latencies"])
        latencies.extend(lat)
        ops += r["ops"]
        elapsed = max(elapsed, r["elapsed"])
        cpu += r["cpu_seconds"]
        for kind, n in r.get("counts", {}).items():
            counts[kind] = counts.get(kind, 0) + n
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    data = sorted(latencies)

    def pct(p):
        return round(data[min(len(data) - 1, int(p * len(data)))] * 1000.0, 3) if data else None

    latency = {name: pct(p) for name, p in PERCENTILES}
    latency["max"] = round(data[-1] * 1000.0, 3) if data else None
    return {
        "ops": ops,
        "seconds": round(elapsed, 3),
        "ops_per_sec": round(ops / elapsed, 1) if elapsed else 0.0,
        "latency_ms": latency,
        "puts": counts["put"],
        "gets": counts["get"],
        "errors": errors,
        "errors_total": sum(errors.values()),
        "client_cpu_percent": round(100.0 * cpu / elapsed, 1) if elapsed else 0.0,
        "config": {
            "protocol": args.protocol,
            "endpoints": args.endpoints,
            "procs": args.procs,
            "connections": args.connections,
            "concurrency": args.concurrency,
            "key_size": args.key_size,
            "value_size": args.value_size,
            "keyspace": args.keyspace,
            "read_ratio": args.read_ratio,
            "consistency": args.consistency,
            "key_order": args.key_order,
            "duration": args.duration,
            "ops": args.ops,
        },
    }


def print_table(s, out):
    lat = s["latency_ms"]
    print("%-22s %s (%d puts, %d gets)" % ("operations", s["ops"], s["puts"], s["gets"]), file=out)
    print("%-22s %.2f" % ("seconds", s["seconds"]), file=out)
    print("%-22s %.1f" % ("ops/s", s["ops_per_sec"]), file=out)
    print("%-22s %s" % ("latency ms p50/p90", "%s / %s" % (lat["p50"], lat["p90"])), file=out)
    print("%-22s %s" % ("latency ms p99/p99.9", "%s / %s" % (lat["p99"], lat["p99.9"])), file=out)
    print("%-22s %s" % ("latency ms max", lat["max"]), file=out)
    errs = ", ".join("%s=%d" % kv for kv in sorted(s["errors"].items())) or "none"
    print("%-22s %s" % ("errors", errs), file=out)
    print("%-22s %.1f%%" % ("client CPU", s["client_cpu_percent"]), file=out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare-etcd"]:
        from geocachedb.bench.compare import main as compare_main

        return compare_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="geocache-bench",
        description="Load a geocachedb (or etcd) cluster and report ops/s and latency. "
        "'geocache-bench compare-etcd --help' runs etcd 3.4 and geocachedb side by side.",
    )
    parser.add_argument("--endpoints", default="127.0.0.1:50051", help="comma-separated HOST:PORT list")
    parser.add_argument("--connections", type=int, default=1, help="connections in total (default 1)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight in total (default 64)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--duration", type=float, default=10.0, help="seconds to run (default 10)")
    group.add_argument("--ops", type=int, default=None, help="operations to run instead of a duration")
    parser.add_argument("--key-size", type=int, default=16)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--keyspace", type=int, default=100000)
    parser.add_argument("--read-ratio", type=float, default=0.0, help="fraction of gets (default 0: all puts)")
    parser.add_argument("--write-op", choices=("put", "txn"), default="put",
                        help="what a write is: a put, or a txn of one compare and one put")
    parser.add_argument("--consistency", choices=("linearizable", "serializable"), default="linearizable")
    parser.add_argument("--procs", type=int, default=1, help="load processes (default 1)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="geocache",
                        help="geocache (default) or etcd (the etcd v3 gRPC KV API; needs grpcio)")
    parser.add_argument("--key-order", choices=("random", "sequential"), default="random",
                        help="random keys (default), or each key of the keyspace in turn (to fill it)")
    parser.add_argument("--stall-timeout", type=float, default=10.0,
                        help="end the run when nothing completes for this many seconds (default 10)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--mark-window", action="store_true",
                        help="write a line to stderr when the load starts and when it ends (for server CPU sampling)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 0.0 <= args.read_ratio <= 1.0:
        parser.error("--read-ratio must be between 0 and 1")
    endpoints = [e for e in args.endpoints.split(",") if e]
    if not endpoints:
        parser.error("--endpoints is empty")
    for endpoint in endpoints:
        try:
            parse_address(endpoint)
        except ValueError as e:
            parser.error("--endpoints: %s" % e)
    for name in ("concurrency", "connections", "procs", "key_size", "keyspace"):
        if getattr(args, name) < 1:
            parser.error("--%s must be at least 1" % name.replace("_", "-"))
    if args.value_size < 0 or (args.ops is not None and args.ops < 0) or args.duration <= 0:
        parser.error("--value-size and --ops must not be negative, --duration must be positive")
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
