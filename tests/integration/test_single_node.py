"""A real single-node `twistd -n geocache` process, reached by every client
flavour, the CLI and raw sockets with bad input."""

import asyncio
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from geocachedb import errors
from geocachedb.client import AsyncioClient, BlockingClient, TwistedClient
from geocachedb.harness.processes import NodeProcess, admin_command, free_port
from geocachedb.wire import geocache_pb2 as pb

BIN = os.path.dirname(sys.executable)


def start_node(test, *extra):
    base = os.path.abspath(test.mktemp())
    os.makedirs(base)
    node = NodeProcess(
        "node1", free_port(), os.path.join(base, "node1"), os.path.join(base, "node1.log"), extra=extra
    )
    test.addCleanup(node.stop)
    node.start().wait_listening()
    return node


def raw_call(sock, request):
    data = request.SerializeToString()
    sock.sendall(struct.pack(">I", len(data)) + data)
    return read_response(sock)


def read_response(sock):
    header = recv_exactly(sock, 4)
    if header is None:
        return None
    body = recv_exactly(sock, struct.unpack(">I", header)[0])
    return pb.Response.FromString(body)


def recv_exactly(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class SingleNodeTests(TestCase):
    timeout = 120

    def setUp(self):
        self.node = start_node(self)

    def test_blocking_client_put_get_delete(self):
        with BlockingClient([self.node.address], timeout=5.0) as c:
            self.assertIsNone(c.get(b"missing"))
            c.put(b"k", b"v")
            self.assertEqual(c.get(b"k"), b"v")
            self.assertEqual(c.get(b"k", serializable=True), b"v")
            self.assertTrue(c.delete(b"k"))
            self.assertFalse(c.delete(b"k"))
            self.assertIsNone(c.get(b"k"))

    def test_admin_stats_show_fsync_times_and_gc_pauses(self):
        with BlockingClient([self.node.address], timeout=5.0) as c:
            for i in range(20):
                c.put(b"k%d" % i, b"v")
        out = admin_command(self.node, "stats")
        fsyncs = int(re.search(r"^\s*fsyncs\s+(\d+)", out, re.M).group(1))
        self.assertGreaterEqual(fsyncs, 20)
        timing = re.search(r"^fsync time \(ms\)\s+total ([\d.]+)  mean ([\d.]+)  p99 ([\d.]+)  max ([\d.]+)",
                           out, re.M)
        self.assertIsNotNone(timing, out)
        total, mean, p99, longest = map(float, timing.groups())
        self.assertGreater(total, 0.0)
        self.assertLessEqual(mean, longest)
        self.assertLessEqual(p99, longest)
        # The start-up's full collection at least.
        self.assertRegex(out, r"gc pauses\s+gen0 \d+ .*gen2 [1-9]\d* \(")

    def test_blocking_client_is_safe_from_many_threads(self):
        failures = []
        with BlockingClient([self.node.address], timeout=10.0) as c:

            def work(t):
                try:
                    for i in range(30):
                        key = b"t%d-%d" % (t, i)
                        c.put(key, key * 2)
                        if c.get(key) != key * 2:
                            failures.append(key)
                except Exception as e:  # recorded, asserted below
                    failures.append(e)

            threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            self.assertEqual(failures, [])
            pairs, more = c.range(prefix=b"t3-")
            self.assertEqual(len(pairs), 30)
            self.assertFalse(more)

    def test_asyncio_client_many_awaits_in_flight(self):
        async def main():
            async with AsyncioClient([self.node.address]) as c:
                await asyncio.gather(*(c.put(b"a%03d" % i, b"v%d" % i) for i in range(200)))
                values = await asyncio.gather(*(c.get(b"a%03d" % i) for i in range(200)))
                deleted = await c.delete(b"a000")
                return values, deleted, await c.get(b"a000")

        values, deleted, after = asyncio.run(main())
        self.assertEqual(values, [b"v%d" % i for i in range(200)])
        self.assertTrue(deleted)
        self.assertIsNone(after)

    @defer.inlineCallbacks
    def test_twisted_client(self):
        c = TwistedClient([self.node.address], reactor=reactor)
        try:
            yield defer.gatherResults([c.put(b"tw%d" % i, b"x%d" % i) for i in range(50)])
            values = yield defer.gatherResults([c.get(b"tw%d" % i) for i in range(50)])
            self.assertEqual(values, [b"x%d" % i for i in range(50)])
            self.assertTrue((yield c.delete(b"tw0")))
            self.assertIsNone((yield c.get(b"tw0")))
        finally:
            c.close()

    def test_errors_carry_the_server_code_and_message(self):
        with BlockingClient([self.node.address]) as c:
            e = self.assertRaises(errors.InvalidArgument, c.put, b"", b"v")
            self.assertIn("empty", e.message)
            e = self.assertRaises(errors.TooLarge, c.put, b"k", b"v" * (1024 * 1024 + 1))
            self.assertIn("limit", e.message)
            e = self.assertRaises(errors.InvalidArgument, c.get, b"k" * 512)

    def test_bad_input_changes_nothing_and_others_are_served(self):
        with BlockingClient([self.node.address]) as c:
            c.put(b"precious", b"data")
        cases = [
            b"\x00\x00\x00\x05garbage and more garbage",
            struct.pack(">I", 2**31) + b"xxxx",
            struct.pack(">I", 3) + b"\xff\xff\xff",
            struct.pack(">I", 0),
        ]
        for payload in cases:
            s = socket.create_connection(("127.0.0.1", self.node.port), timeout=5)
            try:
                s.sendall(payload)
                response = read_response(s)
                # An error response (or just the close), then the close.
                if response is not None:
                    self.assertNotEqual(response.error.code, pb.OK)
                    self.assertIsNone(read_response(s))
            finally:
                s.close()
        # Valid envelopes with bad contents: an error code, the connection stays.
        s = socket.create_connection(("127.0.0.1", self.node.port), timeout=5)
        try:
            r = raw_call(s, pb.Request(id=7, put=pb.PutRequest(key=b"", value=b"x")))
            self.assertEqual((r.id, r.error.code), (7, pb.INVALID_ARGUMENT))
            r = raw_call(s, pb.Request(id=8, put=pb.PutRequest(key=b"k", value=b"v" * (1024 * 1024 + 1))))
            self.assertEqual((r.id, r.error.code), (8, pb.TOO_LARGE))
            r = raw_call(s, pb.Request(id=9, get=pb.GetRequest(key=b"precious")))
            self.assertEqual((r.id, r.get.value), (9, b"data"))
        finally:
            s.close()
        with BlockingClient([self.node.address]) as c:
            self.assertEqual(c.range(), ([(b"precious", b"data")], False))
        self.assertTrue(self.node.alive())

    def test_a_client_that_never_reads_cannot_exhaust_the_node(self):
        # Each tiny request asks for a 256 KiB answer: without back-pressure
        # the node would buffer gigabytes of answers nobody reads.
        with BlockingClient([self.node.address]) as c:
            c.put(b"big", b"x" * (256 * 1024))
        request = pb.Request(id=1, get=pb.GetRequest(key=b"big", serializable=True)).SerializeToString()
        frame = struct.pack(">I", len(request)) + request
        greedy = socket.create_connection(("127.0.0.1", self.node.port), timeout=5)
        greedy.setblocking(False)
        sent = 0
        try:
            deadline = time.monotonic() + 4
            chunk = frame * 1000
            while time.monotonic() < deadline:
                try:
                    # Keep the stream aligned on frames after a short send.
                    sent += greedy.send(chunk[sent % len(chunk):])
                except BlockingIOError:
                    time.sleep(0.01)  # the node stopped reading from us
            self.assertGreater(sent, 0)
            # Bounded: the node stopped reading long before 4 s of this.
            self.assertLess(self.node.rss_bytes(), 300 * 2**20)
            self.assertLess(sent, 64 * 2**20)
            with BlockingClient([self.node.address], timeout=5) as c:
                c.put(b"still", b"served")
                self.assertEqual(c.get(b"still"), b"served")
        finally:
            greedy.close()

    def test_sigkill_after_acknowledged_puts_loses_nothing(self):
        acked = {}

        async def load():
            async with AsyncioClient([self.node.address]) as c:
                async def one(i):
                    await c.put(b"ack%04d" % i, b"value%d" % i)
                    acked[b"ack%04d" % i] = b"value%d" % i

                await asyncio.gather(*(one(i) for i in range(500)))

        asyncio.run(load())
        self.node.kill()
        self.node.start().wait_listening()
        with BlockingClient([self.node.address], timeout=10) as c:
            pairs, _ = c.range(prefix=b"ack", limit=1000)
        self.assertEqual(dict(pairs), acked)

    def test_cli_one_shot_exit_statuses(self):
        cli = [os.path.join(BIN, "geocache-cli"), "--addr", self.node.address]

        def run(*args):
            return subprocess.run(cli + list(args), capture_output=True, text=True, timeout=30)

        r = run("put", "greeting", "hello", "world")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "OK"))
        r = run("get", "greeting")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "hello world"))
        r = run("get", "nope")
        self.assertEqual(r.returncode, 1)
        r = run("delete", "greeting")
        self.assertEqual(r.returncode, 0)
        r = run("delete", "greeting")
        self.assertEqual(r.returncode, 1)
        r = run("frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command", r.stderr)

    def test_cli_interactive(self):
        cli = [os.path.join(BIN, "geocache-cli"), "--addr", self.node.address]
        r = subprocess.run(
            cli, input="put a 1\nget a\ndelete a\nget a\nhelp\nquit\n", capture_output=True, text=True, timeout=30,
            env=dict(os.environ, HOME=self.mktemp()),
        )
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("OK", r.stdout)
        self.assertIn("1", r.stdout)
        self.assertIn("deleted", r.stdout)
        self.assertIn("(not found)", r.stdout)
        self.assertIn("commands:", r.stdout)


class StartupErrorTests(TestCase):
    timeout = 60

    def test_cli_cannot_connect_message(self):
        port = free_port()
        r = subprocess.run(
            [os.path.join(BIN, "geocache-cli"), "--addr", "127.0.0.1:%d" % port, "--timeout", "1", "get", "k"],
            capture_output=True, text=True, timeout=30,
        )
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot connect to 127.0.0.1:%d: connection refused" % port, r.stderr)

    def test_port_in_use_exits_at_once_naming_the_port(self):
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        try:
            base = os.path.abspath(self.mktemp())
            node = NodeProcess("node1", port, os.path.join(base, "d"), base + ".log")
            self.addCleanup(node.stop)
            node.start()
            node.proc.wait(30)
            self.assertNotEqual(node.proc.returncode, 0)
            log = node.read_log()
            self.assertIn("cannot listen", log)
            self.assertIn(str(port), log)
            self.assertNotIn("Traceback", log)
        finally:
            holder.close()

    def test_unwritable_data_dir_exits_at_once_naming_the_path(self):
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        blocker = os.path.join(base, "file")
        with open(blocker, "w") as f:
            f.write("x")
        node = NodeProcess("node1", free_port(), os.path.join(blocker, "data"), os.path.join(base, "n.log"))
        self.addCleanup(node.stop)
        node.start()
        node.proc.wait(30)
        self.assertNotEqual(node.proc.returncode, 0)
        log = node.read_log()
        self.assertIn("cannot use data directory", log)
        self.assertIn(blocker, log)
        self.assertNotIn("Traceback", log)
