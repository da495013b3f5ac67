"""The load generator behind ``geocache-bench``: one process's worth of load.

Each load process runs an asyncio loop with ``connections`` connections and
``concurrency`` workers spread over them; a worker sends one request, awaits
its answer, records the latency, and sends the next.  The client core is used
directly (no failover session) so the generator spends as little CPU per
request as it can; errors are counted by code, not retried.
"""

import array
import asyncio
import os
import random
import time

import txaio.aio

from geocachedb import errors
from geocachedb.client.asyncio_client import _Connection
from geocachedb.client.core import parse_address
from geocachedb.wire import geocache_pb2 as pb


class LoadSpec:
    def __init__(self, endpoints, connections=1, concurrency=64, duration=10.0, ops=None,
                 key_size=16, value_size=100, keyspace=100000, read_ratio=0.0,
                 consistency="linearizable", seed=None):
        self.endpoints = endpoints
        self.connections = max(1, connections)
        self.concurrency = max(1, concurrency)
        self.duration = duration
        self.ops = ops
        self.key_size = key_size
        self.value_size = value_size
        self.keyspace = keyspace
        self.read_ratio = read_ratio
        self.consistency = consistency
        self.seed = seed


def make_key(i, size):
    text = b"k%d" % i
    return text.rjust(size, b"0")[:size] if size >= len(text) else text


async def run_load(spec, progress=None, proc_index=0):
    """Run the load; return a dict of results (latencies as array('d'))."""
    loop = asyncio.get_running_loop()
    api = txaio.aio.with_config(loop=loop)
    rng = random.Random(spec.seed if spec.seed is not None else os.getpid())
    conns = []
    for n in range(spec.connections):
        host, port = parse_address(spec.endpoints[(proc_index + n) % len(spec.endpoints)])
        _, conn = await loop.create_connection(lambda: _Connection(api, None), host, port)
        conns.append(conn)
    value = os.urandom(spec.value_size // 2 + 1).hex().encode()[: spec.value_size]
    serializable = spec.consistency == "serializable"
    latencies = array.array("d")
    errors_by_code = {}
    done = [0]
    deadline = time.monotonic() + spec.duration if spec.ops is None else None
    remaining = [spec.ops] if spec.ops is not None else None
    clock = time.perf_counter
    keys = [make_key(i, spec.key_size) for i in range(min(spec.keyspace, 1 << 20))]

    async def worker(conn):
        core = conn.core
        while True:
            if remaining is not None:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            elif time.monotonic() >= deadline:
                return
            key = keys[rng.randrange(len(keys))]
            request = pb.Request()
            if rng.random() < spec.read_ratio:
                request.get.key = key
                request.get.serializable = serializable
            else:
                request.put.key = key
                request.put.value = value
            start = clock()
            try:
                await core.call(request)
            except errors.GeoCacheError as e:
                errors_by_code[e.code_name] = errors_by_code.get(e.code_name, 0) + 1
                if core.closed_reason is not None:
                    return
                continue
            latencies.append(clock() - start)
            done[0] += 1
            if progress is not None:
                progress[proc_index] = done[0]

    started = time.monotonic()
    cpu0 = os.times()
    await asyncio.gather(*(worker(conns[i % len(conns)]) for i in range(spec.concurrency)))
    elapsed = time.monotonic() - started
    cpu1 = os.times()
    for conn in conns:
        conn.close()
    return {
        "ops": done[0],
        "elapsed": elapsed,
        "latencies": latencies,
        "errors": errors_by_code,
        "cpu_seconds": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
    }
