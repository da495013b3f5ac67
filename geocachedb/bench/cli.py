"""``geocache-bench``: drive a geocachedb cluster and report throughput and
latency.

    geocache-bench --endpoints 127.0.0.1:50051 --concurrency 64 --duration 10
    geocache-bench --endpoints ... --read-ratio 1.0 --consistency serializable --json

With ``--procs N`` the load comes from N processes (each with its share of
``--concurrency`` and ``--connections``) so the Python generator is not the
bottleneck.  On a terminal a progress line redraws in place; ``--json``
prints one machine-readable object instead of the table.
"""

import argparse
import array
import asyncio
import json
import multiprocessing
import os
import sys
import time

from geocachedb.bench.load import LoadSpec, run_load

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))


def _child(spec, progress, index, conn):
    try:
        result = asyncio.run(run_load(spec, progress, index))
        result["latencies"] = result["latencies"].tobytes()
        conn.send(result)
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
    progress = ctx.Array("q", procs, lock=False)
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
                results.append(conn.recv())
                p.join(5)
                pending.remove((p, conn))
        now = time.monotonic()
        if live and now - last_t >= 0.5:
            done = sum(progress)
            rate = (done - last_ops) / (now - last_t)
            out.write("\r%6.1fs  %10d ops  %9.0f ops/s  " % (now - started, done, rate))
            out.flush()
            last_ops, last_t = done, now
    if live:
        out.write("\r" + " " * 60 + "\r")
    failed = [r["error"] for r in results if "error" in r]
    if failed:
        print("geocache-bench: %s" % failed[0], file=sys.stderr)
        return 2
    summary = summarize(results, args)
    if args.json:
        print(json.dumps(summary), file=out)
    else:
        print_table(summary, out)
    return 0


def summarize(results, args):
    latencies = array.array("d")
    errors = {}
    ops = 0
    elapsed = 0.0
    cpu = 0.0
    for r in results:
        lat = array.array("d")
        lat.frombytes(r["latencies"])
        latencies.extend(lat)
        ops += r["ops"]
        elapsed = max(elapsed, r["elapsed"])
        cpu += r["cpu_seconds"]
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
        "errors": errors,
        "client_cpu_percent": round(100.0 * cpu / elapsed, 1) if elapsed else 0.0,
        "config": {
            "endpoints": args.endpoints,
            "procs": args.procs,
            "connections": args.connections,
            "concurrency": args.concurrency,
            "key_size": args.key_size,
            "value_size": args.value_size,
            "keyspace": args.keyspace,
            "read_ratio": args.read_ratio,
            "consistency": args.consistency,
        },
    }


def print_table(s, out):
    lat = s["latency_ms"]
    print("%-22s %s" % ("operations", s["ops"]), file=out)
    print("%-22s %.2f" % ("seconds", s["seconds"]), file=out)
    print("%-22s %.1f" % ("ops/s", s["ops_per_sec"]), file=out)
    print("%-22s %s" % ("latency ms p50/p90", "%s / %s" % (lat["p50"], lat["p90"])), file=out)
    print("%-22s %s" % ("latency ms p99/p99.9", "%s / %s" % (lat["p99"], lat["p99.9"])), file=out)
    print("%-22s %s" % ("latency ms max", lat["max"]), file=out)
    errs = ", ".join("%s=%d" % kv for kv in sorted(s["errors"].items())) or "none"
    print("%-22s %s" % ("errors", errs), file=out)
    print("%-22s %.1f%%" % ("client CPU", s["client_cpu_percent"]), file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="geocache-bench", description="Load a geocachedb cluster.")
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
    parser.add_argument("--consistency", choices=("linearizable", "serializable"), default="linearizable")
    parser.add_argument("--procs", type=int, default=1, help="load processes (default 1)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 0.0 <= args.read_ratio <= 1.0:
        parser.error("--read-ratio must be between 0 and 1")
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
