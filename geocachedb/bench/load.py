"""The load generator behind ``geocache-bench``: one process's worth of load.

Each load process runs an asyncio loop with ``connections`` connections and
``concurrency`` workers spread over them; a worker sends one request, awaits
its answer, records the latency, and sends the next.  The same loop drives
either system — geocachedb through its public `AsyncioClient` (what users
run: failover, leader hints, exactly-once writes) or etcd v3 through
``grpc.aio`` with hand-encoded messages (`etcd_wire`) — so a comparison
differs only in what sits behind `put`/`get`.  Errors the client gives up
on are counted by code.  A watchdog ends the run when nothing has completed
for ``stall_timeout`` seconds and counts the requests still in flight as
``STALLED``, so a dead server cannot hang the generator.
"""

import array
import asyncio
import os
import random
import time

from geocachedb import errors
from geocachedb.bench import etcd_wire
from geocachedb.client import AsyncioClient, Compare, Op
from geocachedb.net import parse_address

PROTOCOLS = ("geocache", "etcd")
WINDOW_START = b"geocache-bench: load window start\n"
WINDOW_END = b"geocache-bench: load window end\n"


_ALWAYS = 1 << 40  # a version no key reaches: the txn compare always holds


class BenchError(Exception):
    """A problem that stops the run before any load (bad endpoint, missing
    dependency); the CLI prints it and exits 2."""


class LoadSpec:
    def __init__(self, endpoints, connections=1, concurrency=64, duration=10.0, ops=None,
                 key_size=16, value_size=100, keyspace=100000, read_ratio=0.0,
                 consistency="linearizable", seed=None, protocol="geocache",
                 key_order="random", key_start=0, key_step=1, stall_timeout=10.0,
                 connect_timeout=5.0, mark_window=False, request_timeout=5.0, write_op="put"):
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
        self.protocol = protocol
        self.key_order = key_order
        self.key_start = key_start
        self.key_step = max(1, key_step)
        self.stall_timeout = stall_timeout
        self.connect_timeout = connect_timeout
        # How long the geocachedb client keeps trying one request (retries
        # and failover included) before it reports it as an error.
        self.request_timeout = request_timeout
        # Write WINDOW_START/WINDOW_END lines to stderr around the load, so a
        # caller can sample the servers' CPU over exactly the load window.
        self.mark_window = mark_window
        # "put", or "txn": one compare (always true) and one put in a txn.
        self.write_op = write_op


def make_key(i, size):
    text = b"k%d" % i
    return text.rjust(size, b"0")[:size] if size >= len(text) else text


class GeocacheConnection:
    """One public `AsyncioClient`: one connection at a time, to the given
    endpoint first, the other endpoints for failover."""

    error_types = (errors.GeoCacheError,)
    broken = False  # the client reconnects and fails over by itself

    def __init__(self, client):
        self._client = client
        self.put = client.put
        self.get = client.get

    def txn(self, key, value):
        return self._client.txn().when(Compare.version(key) < _ALWAYS).then(Op.put(key, value)).commit()

    @classmethod
    async def open(cls, endpoints, connect_timeout, request_timeout=5.0):
        client = AsyncioClient(endpoints, timeout=connect_timeout)
        try:
            await client.connect()
        except errors.Unavailable as e:
            client.close()
            raise BenchError(e.message) from None
        client.timeout = request_timeout
        return cls(client)

    @staticmethod
    def error_code(e):
        return e.code_name

    async def close(self):
        self._client.close()


class EtcdConnection:
    """One gRPC channel (one HTTP/2 connection) to an etcd v3 member."""

    broken = False

    def __init__(self, grpc, channel):
        self._channel = channel
        self._put = channel.unary_unary(etcd_wire.PUT)
        self._txn = channel.unary_unary(etcd_wire.TXN)
        self._range = channel.unary_unary(etcd_wire.RANGE)
        self.error_types = (grpc.aio.AioRpcError,)

    @classmethod
    async def open(cls, endpoints, timeout, request_timeout=None):
        endpoint = endpoints[0]
        try:
            import grpc
        except ImportError:
            raise BenchError("--protocol etcd needs grpcio: pip install 'geocachedb[bench]' (or grpcio)") from None
        parse_address(endpoint)
        # A local subchannel pool gives each channel its own TCP connection;
        # by default grpc shares one between channels to the same address.
        channel = grpc.aio.insecure_channel(endpoint, options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout)
        except asyncio.TimeoutError:
            await channel.close()
            raise BenchError("cannot connect to etcd at %s within %gs" % (endpoint, timeout)) from None
        return cls(grpc, channel)

    def put(self, key, value):
        return self._put(etcd_wire.put_request(key, value))

    def get(self, key, serializable):
        return self._range(etcd_wire.range_request(key, serializable))

    def txn(self, key, value):
        return self._txn(etcd_wire.txn_request(key, value))

    @staticmethod
    def error_code(e):
        return e.code().name

    async def close(self):
        await self._channel.close()


CONNECTIONS = {"geocache": GeocacheConnection, "etcd": EtcdConnection}


async def run_load(spec, progress=None, proc_index=0):
    """Run the load; return a dict of results (latencies as array('d')).

    ``progress``, when given, is a shared array with two slots per load
    process: operations done and errors so far."""
    kind = CONNECTIONS[spec.protocol]
    rng = random.Random(spec.seed if spec.seed is not None else os.getpid())
    conns = []
    try:
        for n in range(spec.connections):
            # Connections spread over the endpoints; each has the others
            # after its own for failover.
            first = (proc_index + n) % len(spec.endpoints)
            endpoints = spec.endpoints[first:] + spec.endpoints[:first]
            conns.append(await kind.open(endpoints, spec.connect_timeout, spec.request_timeout))
        return await _drive(spec, conns, rng, progress, proc_index)
    finally:
        for conn in conns:
            await conn.close()


async def _drive(spec, conns, rng, progress, proc_index):
    value = os.urandom(spec.value_size // 2 + 1).hex().encode()[: spec.value_size]
    serializable = spec.consistency == "serializable"
    read_ratio = spec.read_ratio
    latencies = array.array("d")
    errors_by_code = {}
    counts = {"put": 0, "get": 0}
    state = {"done": 0, "errors": 0, "in_flight": 0}
    deadline = time.monotonic() + spec.duration if spec.ops is None else None
    remaining = [spec.ops] if spec.ops is not None else None
    clock = time.perf_counter
    keys = [make_key(i, spec.key_size) for i in range(min(spec.keyspace, 1 << 20))]
    sequential = spec.key_order == "sequential"
    next_index = [spec.key_start]
    step = spec.key_step
    slot = 2 * proc_index

    async def worker(conn):
        put, get, error_types = conn.put, conn.get, conn.error_types
        if spec.write_op == "txn":
            put = conn.txn
        while True:
            if remaining is not None:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            elif time.monotonic() >= deadline:
                return
            if sequential:
                key = keys[next_index[0] % len(keys)]
                next_index[0] += step
            else:
                key = keys[rng.randrange(len(keys))]
            is_read = read_ratio and rng.random() < read_ratio
            state["in_flight"] += 1
            start = clock()
            try:
                if is_read:
                    await get(key, serializable)
                else:
                    await put(key, value)
            except error_types as e:
                state["in_flight"] -= 1
                code = conn.error_code(e)
                errors_by_code[code] = errors_by_code.get(code, 0) + 1
                state["errors"] += 1
                if progress is not None:
                    progress[slot + 1] = state["errors"]
                if conn.broken:
                    return
                continue
            latencies.append(clock() - start)
            state["in_flight"] -= 1
            state["done"] += 1
            counts["get" if is_read else "put"] += 1
            if progress is not None:
                progress[slot] = state["done"]

    if spec.mark_window:
        os.write(2, WINDOW_START)
    started = time.monotonic()
    cpu0 = time.process_time()  # all threads, ns resolution (os.times ticks are 10 ms)
    tasks = [asyncio.ensure_future(worker(conns[i % len(conns)])) for i in range(spec.concurrency)]
    pending = set(tasks)
    last_seen, last_change = -1, time.monotonic()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=0.25)
        seen = state["done"] + state["errors"]
        now = time.monotonic()
        if seen != last_seen:
            last_seen, last_change = seen, now
        elif pending and now - last_change > spec.stall_timeout:
            stalled = state["in_flight"]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if stalled:
                errors_by_code["STALLED"] = errors_by_code.get("STALLED", 0) + stalled
            break
    elapsed = time.monotonic() - started
    cpu1 = time.process_time()
    if spec.mark_window:
        os.write(2, WINDOW_END)
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise t.exception()
    return {
        "ops": state["done"],
        "elapsed": elapsed,
        "latencies": latencies,
        "errors": errors_by_code,
        "counts": counts,
        "cpu_seconds": cpu1 - cpu0,
    }
