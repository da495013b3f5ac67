"""Storage backend benchmark: our B+Tree against LMDB on the same data.

    python bench/storage_bench.py                 # 1,000,000 keys (the issue's size)
    python bench/storage_bench.py --keys 100000   # smaller

Random keys (16 bytes) with 100-byte values, written through the IStorage
interface in batches of 1,000 (one `apply_batch`, i.e. one durable commit,
per batch, as the replicated path does).  For each backend it measures:

* puts/s    loading every key, in batches;
* gets/s    one `get` of every key, in random order;
* scan      one full `scan()`, in keys/s;
* file size after the load, and after deleting a random half of the keys
  and inserting them again (with new values), both in batches.

Both backends run in the same process on the same keys, one after the
other, and the figures are printed with the B+Tree/LMDB ratio.  This is a
benchmark, not a test: it asserts only that the data read back is right.
"""

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from geocachedb.storage import open_storage  # noqa: E402


def _disk_usage(store):
    path = store.file if hasattr(store, "file") else os.path.join(store.path, "data.mdb")
    st = os.stat(path)
    return st.st_size, st.st_blocks * 512


def run_backend(name, root, keys, values, values2, batch, gets_order, half):
    path = os.path.join(root, name)
    store = open_storage(name, path)
    result = {}
    try:
        n = len(keys)
        index = 0
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            index += 1
            store.apply_batch(zip(keys[i : i + batch], values[i : i + batch]), (), index)
        result["puts"] = n / (time.perf_counter() - t0)
        result["size_load"] = _disk_usage(store)

        get = store.get
        t0 = time.perf_counter()
        for i in gets_order:
            if get(keys[i]) is None:
                raise AssertionError("%s lost key %r" % (name, keys[i]))
        result["gets"] = len(gets_order) / (time.perf_counter() - t0)
        if get(keys[gets_order[0]]) != values[gets_order[0]]:
            raise AssertionError("%s returned a wrong value" % name)

        t0 = time.perf_counter()
        pairs = store.scan()
        result["scan"] = len(pairs) / (time.perf_counter() - t0)
        if len(pairs) != n:
            raise AssertionError("%s scanned %d of %d keys" % (name, len(pairs), n))
        del pairs

        doomed = [keys[i] for i in half]
        t0 = time.perf_counter()
        for i in range(0, len(doomed), batch):
            index += 1
            store.apply_batch((), doomed[i : i + batch], index)
        result["deletes"] = len(doomed) / (time.perf_counter() - t0)
        result["size_deleted"] = _disk_usage(store)
        t0 = time.perf_counter()
        for i in range(0, len(half), batch):
            index += 1
            chunk = half[i : i + batch]
            store.apply_batch([(keys[j], values2[j]) for j in chunk], (), index)
        result["reinsert"] = len(half) / (time.perf_counter() - t0)
        result["size_reinsert"] = _disk_usage(store)
        if store.get(keys[half[0]]) != values2[half[0]]:
            raise AssertionError("%s returned a stale value" % name)
        if store.stats()["keys"] != n:
            raise AssertionError("%s counts %d keys, expected %d" % (name, store.stats()["keys"], n))
    finally:
        store.close()
    if name == "btree":
        from geocachedb.storage.btree.check import check_file

        t0 = time.perf_counter()
        report = check_file(path)
        result["check_s"] = time.perf_counter() - t0
        result["check_ok"] = report.ok
        if not report.ok:
            print("checker:", report.problems[:10])
    return result


def _mib(size):
    return "%.1f MiB" % (size / 1048576.0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--key-size", type=int, default=16)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--backends", default="btree,lmdb")
    parser.add_argument("--dir", default=None, help="where to put the stores (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    keyset = set()
    while len(keyset) < args.keys:
        keyset.add(rng.randbytes(args.key_size))
    keys = list(keyset)
    rng.shuffle(keys)
    values = [rng.randbytes(args.value_size) for _ in range(args.keys)]
    values2 = [rng.randbytes(args.value_size) for _ in range(args.keys)]
    gets_order = list(range(args.keys))
    rng.shuffle(gets_order)
    half = rng.sample(range(args.keys), args.keys // 2)

    root = tempfile.mkdtemp(prefix="storage-bench-", dir=args.dir)
    print(
        "%d keys of %d bytes, values of %d bytes, batches of %d; python %s on %s, %d CPUs; in %s"
        % (
            args.keys,
            args.key_size,
            args.value_size,
            args.batch,
            platform.python_version(),
            platform.platform(),
            os.cpu_count(),
            root,
        )
    )
    results = {}
    try:
        for name in args.backends.split(","):
            t0 = time.perf_counter()
            results[name] = run_backend(name, root, keys, values, values2, args.batch, gets_order, half)
            print("%s done in %.1f s" % (name, time.perf_counter() - t0), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    names = list(results)
    rows = [
        ("puts/s", "puts", "rate"),
        ("random gets/s", "gets", "rate"),
        ("full scan keys/s", "scan", "rate"),
        ("deletes/s (half)", "deletes", "rate"),
        ("re-inserts/s (half)", "reinsert", "rate"),
        ("file after load", "size_load", "size"),
        ("file after delete half", "size_deleted", "size"),
        ("file after re-insert", "size_reinsert", "size"),
    ]
    header = "%-24s" % "" + "".join("%18s" % n for n in names)
    if "btree" in results and "lmdb" in results:
        header += "%16s" % "btree/lmdb"
    print(header)
    for label, field, kind in rows:
        line = "%-24s" % label
        for n in names:
            value = results[n][field]
            if kind == "rate":
                line += "%18s" % ("{:,.0f}".format(value))
            else:
                line += "%18s" % ("%s (%s)" % (_mib(value[0]), _mib(value[1]).split()[0]))
        if "btree" in results and "lmdb" in results:
            a = results["btree"][field]
            b = results["lmdb"][field]
            if kind == "size":
                a, b = a[0], b[0]
            line += "%16s" % ("%.2fx" % (a / b))
        print(line)
    print("(sizes: apparent size (allocated MiB))")
    if "btree" in results:
        print("btree checker: %s in %.1f s" % ("ok" if results["btree"]["check_ok"] else "PROBLEMS", results["btree"]["check_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
