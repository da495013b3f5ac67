#!/usr/bin/env python
"""How the write-behind batch size changes the storage's cost per key.

The node writes applied entries to storage in one transaction per flush
(`geocachedb.statemachine`, `FLUSH_SECONDS` in `geocachedb.node.node`).
With random keys every key dirties a B+tree leaf page, so small batches
write nearly a page per key.  This loads --keyspace keys, then rewrites
--writes random keys in batches of each size given, through
``IStorage.apply_batch`` (one durable commit per batch, keys sorted as the
state machine sorts them), and prints user, system and wall time per key.

    python bench/writebehind_bench.py                      # LMDB, batches 800..20000
    python bench/writebehind_bench.py --batches 800,8000 --backend btree
"""

import argparse
import os
import random
import resource
import shutil
import tempfile
import time

from geocachedb.storage import open_storage


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="lmdb")
    p.add_argument("--keyspace", type=int, default=100000)
    p.add_argument("--writes", type=int, default=160000, help="keys rewritten per batch size")
    p.add_argument("--batches", default="800,2000,8000,20000", help="keys per transaction, comma-separated")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    base = tempfile.mkdtemp(prefix="geocache-writebehind-")
    storage = open_storage(args.backend, os.path.join(base, "kv"))
    try:
        keys = [b"%016d" % i for i in range(args.keyspace)]
        value = rng.randbytes(args.value_size)
        index = 1
        for start in range(0, len(keys), 10000):
            storage.apply_batch([(k, value) for k in keys[start:start + 10000]], [], index)
            index += 1
        print("%s, %d keys of 16 B with %d B values; %d random rewrites per batch size"
              % (args.backend, args.keyspace, args.value_size, args.writes))
        for size in (int(s) for s in args.batches.split(",")):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            for _ in range(max(1, args.writes // size)):
                batch = sorted(rng.sample(keys, size))
                storage.apply_batch([(k, value) for k in batch], [], index)
                index += 1
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            n = max(1, args.writes // size) * size
            print("%6d keys per transaction: user %.1f us/key, system %.1f us/key, wall %.1f us/key"
                  % (size, (r1.ru_utime - r0.ru_utime) / n * 1e6, (r1.ru_stime - r0.ru_stime) / n * 1e6, wall / n * 1e6))
    finally:
        storage.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
