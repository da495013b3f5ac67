"""The client's core without a server: the exactly-once floor, deadlines kept
by the connection (no timer per request), one send per event-loop turn, and
``timeout=`` on a call."""

import asyncio
import socket
import struct
import time

import txaio.tx
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from geocachedb import errors
from geocachedb.client import AsyncioClient
from geocachedb.client.asyncio_client import _Connection
from geocachedb.client.core import ClientCore, WriteSequencer, build_request
from geocachedb.wire import geocache_pb2 as pb


def answer(core, rid, kind="put"):
    response = pb.Response(id=rid)
    getattr(response, kind).SetInParent()
    data = response.SerializeToString()
    core.data_received(struct.pack(">I", len(data)) + data)


class WriteSequencerTests(SynchronousTestCase):
    def floors(self, sequencer, n):
        out = []
        for _ in range(n):
            request = pb.Request()
            sequencer.begin(request)
            out.append((request.seq, request.ack_floor))
        return out

    def test_the_floor_is_the_oldest_unanswered_write(self):
        s = WriteSequencer()
        self.assertEqual(self.floors(s, 3), [(1, 1), (2, 1), (3, 1)])
        s.end(2)
        self.assertEqual(s.floor, 1)  # 1 is still open
        s.end(1)
        self.assertEqual(s.floor, 3)  # past 2, answered earlier
        s.end(3)
        self.assertEqual(self.floors(s, 1), [(4, 4)])  # nothing open: the new one

    def test_the_floor_matches_the_minimum_of_the_open_set_in_any_order(self):
        import random

        rng = random.Random(7)
        s = WriteSequencer()
        open_ = set()
        for _ in range(2000):
            if open_ and rng.random() < 0.5:
                seq = rng.choice(sorted(open_))
                open_.discard(seq)
                s.end(seq)
            else:
                request = pb.Request()
                open_.add(s.begin(request))
                self.assertEqual(request.ack_floor, min(open_))


class ClockAPI:
    """txaio's Twisted API with its timers on a `Clock` (txaio itself only
    takes the global reactor)."""

    def __init__(self, clock):
        self._api = txaio.tx.with_config()
        self.call_later = clock.callLater

    def __getattr__(self, name):
        return getattr(self._api, name)


class DeadlineTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.sent = []
        self.core = ClientCore(ClockAPI(self.clock), self.sent.append, clock=self.clock.seconds)

    def call(self, timeout):
        return self.core.call(build_request("put", b"k", b"v"), timeout)

    def test_an_unanswered_request_fails_with_timeout_error_at_its_deadline(self):
        d = self.call(2.0)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, TimeoutError)
        answer(self.core, 1)  # a late answer is dropped
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_answered_requests_never_time_out_and_need_no_timer_each(self):
        ds = [self.call(5.0) for _ in range(100)]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # one timer for all of them
        for rid in range(1, 101):
            answer(self.core, rid)
        for d in ds:
            self.successResultOf(d)
        self.clock.advance(10)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_deadline_queue_stays_as_long_as_what_is_in_flight(self):
        for rid in range(1, 1001):
            self.call(5.0)
            answer(self.core, rid)
        (queue,) = self.core._deadlines.values()
        self.assertLessEqual(len(queue), 2)

    def test_a_shorter_timeout_sent_later_expires_first(self):
        long = self.call(5.0)
        short = self.call(1.0)
        self.clock.advance(1.0)
        self.failureResultOf(short, TimeoutError)
        self.assertNoResult(long)
        self.clock.advance(4.0)
        self.failureResultOf(long, TimeoutError)

    def test_no_timeout_means_no_deadline(self):
        d = self.call(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        answer(self.core, 1)
        self.successResultOf(d)

    def test_a_lost_connection_fails_the_rest_and_cancels_the_timer(self):
        d = self.call(5.0)
        self.core.connection_lost("gone")
        self.failureResultOf(d, errors.Unavailable)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FakeTransport:
    def __init__(self):
        self.writes = []

    def write(self, data):
        self.writes.append(data)

    def is_closing(self):
        return False

    def get_extra_info(self, name):
        return None


class AsyncioConnectionTests(SynchronousTestCase):
    def test_requests_of_one_loop_turn_go_out_in_one_write(self):
        import txaio.aio

        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        conn = _Connection(txaio.aio.with_config(loop=loop), None, loop)
        transport = FakeTransport()
        conn.connection_made(transport)
        for _ in range(3):
            conn.core.call(build_request("put", b"k", b"v"))
        self.assertEqual(transport.writes, [])
        loop.run_until_complete(asyncio.sleep(0))
        self.assertEqual(len(transport.writes), 1)
        frames, data = 0, transport.writes[0]
        while data:
            (n,) = struct.unpack_from(">I", data)
            data = data[4 + n:]
            frames += 1
        self.assertEqual(frames, 3)


class CallTimeoutTests(SynchronousTestCase):
    def test_timeout_on_a_call_bounds_it_without_wait_for(self):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts, never answers
        address = "127.0.0.1:%d" % listener.getsockname()[1]

        async def main():
            client = AsyncioClient([address], timeout=30.0)
            try:
                await client.connect()
                started = time.monotonic()
                with self.assertRaises(errors.Unavailable) as caught:
                    await client.put(b"k", b"v", timeout=0.3)
                return time.monotonic() - started, str(caught.exception)
            finally:
                client.close()

        elapsed, message = asyncio.run(main())
        self.assertLess(elapsed, 3.0)
        self.assertIn("no answer from %s" % address, message)

    def test_connect_names_the_refused_address(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        address = "127.0.0.1:%d" % s.getsockname()[1]
        s.close()  # nothing listens there

        async def main():
            client = AsyncioClient([address], timeout=2.0)
            try:
                await client.connect()
            finally:
                client.close()

        with self.assertRaises(errors.Unavailable) as caught:
            asyncio.run(main())
        self.assertIn("cannot connect to %s: connection refused" % address, str(caught.exception))
