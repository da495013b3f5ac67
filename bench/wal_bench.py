"""Benchmark of the durable Raft log (`geocachedb.wal.WriteAheadLog`).

Replays what a Raft host does under load: append a batch of entries, update
the hard state (the commit index moves), one `sync` per batch (group
commit), and repeat.  Prints entries/s, batches/s, and the latency of
`append` and of `sync` (one write + one fdatasync); the machine's core count
and the filesystem of the log directory are printed too, since fsync latency
is a property of the disk more than of this code.

    .venv/bin/python bench/wal_bench.py                      # 1000 x 100 x 130 B
    .venv/bin/python bench/wal_bench.py --batches 200 --batch-size 1000
    .venv/bin/python bench/wal_bench.py --dir /mnt/nvme/tmp  # a given disk

The log directory is a fresh temporary directory under ``--dir`` (default:
the current directory, i.e. the disk the repository is on, not a tmpfs) and
is removed afterwards.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from geocachedb.raft.types import Entry, HardState  # noqa: E402
from geocachedb.wal import WriteAheadLog  # noqa: E402


def percentile(sorted_values, fraction):
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def filesystem_of(path):
    try:
        out = subprocess.run(
            ["df", "-hT", path], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        return out[-1]
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100, help="entries per batch")
    parser.add_argument("--entry-bytes", type=int, default=130, help="data bytes per entry")
    parser.add_argument("--segment-bytes", type=int, default=64 << 20)
    parser.add_argument("--compact-every", type=int, default=0,
                        help="compact to the middle of the log every N batches (0: never)")
    parser.add_argument("--dir", default=".", help="where to create the temporary log directory")
    args = parser.parse_args(argv)

    directory = tempfile.mkdtemp(prefix="wal-bench-", dir=args.dir)
    try:
        wal = WriteAheadLog(directory, segment_bytes=args.segment_bytes)
        data = os.urandom(args.entry_bytes)
        append_times, sync_times = [], []
        index = 0
        started = time.perf_counter()
        for batch in range(args.batches):
            # Building the entries is the Raft core's work, not the log's.
            entries = [Entry(i, 1, data) for i in range(index + 1, index + args.batch_size + 1)]
            index += args.batch_size
            t0 = time.perf_counter()
            wal.append(entries)
            wal.set_hard_state(HardState(1, "node1", index))
            t1 = time.perf_counter()
            wal.sync()
            t2 = time.perf_counter()
            append_times.append(t1 - t0)
            sync_times.append(t2 - t1)
            if args.compact_every and (batch + 1) % args.compact_every == 0:
                wal.compact(index // 2, 1)
        elapsed = time.perf_counter() - started
        stats = wal.stats()
        wal.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    total = args.batches * args.batch_size
    sync_times.sort()
    append_times.sort()
    ms = 1000.0
    print("machine:     %d cores (nproc), %s" % (os.cpu_count(), sys.version.split()[0]))
    print("filesystem:  %s" % filesystem_of(args.dir))
    print("workload:    %d batches x %d entries x %d bytes, segment %d MiB"
          % (args.batches, args.batch_size, args.entry_bytes, args.segment_bytes >> 20))
    print("entries/s:   %.0f" % (total / elapsed))
    print("batches/s:   %.0f (one sync each)" % (args.batches / elapsed))
    print("MB/s:        %.1f (on disk)" % (stats["bytes_on_disk"] / elapsed / 1e6))
    print("sync ms:     median %.3f  p90 %.3f  p99 %.3f  max %.3f"
          % tuple(x * ms for x in (statistics.median(sync_times), percentile(sync_times, 0.9),
                                   percentile(sync_times, 0.99), sync_times[-1])))
    print("append ms:   median %.3f  p99 %.3f (encode only, no I/O)"
          % (statistics.median(append_times) * ms, percentile(append_times, 0.99) * ms))
    print("fsyncs:      %d for %d syncs; %d segments, %d bytes on disk"
          % (stats["fsyncs"], stats["syncs"], stats["segments"], stats["bytes_on_disk"]))


if __name__ == "__main__":
    main()
