"""The asyncio client: the shared `Session` logic on an asyncio loop.

    async with AsyncioClient(["127.0.0.1:50051", "127.0.0.1:50052"]) as c:
        await c.put(b"k", b"v")
        await c.get(b"k")

Many awaits may be in flight on the one connection at once.
"""

import asyncio

import txaio.aio

from geocachedb import errors
from geocachedb.client.core import ClientCore
from geocachedb.client.session import Session
from geocachedb.net import format_address, set_socket_no_delay


class _Connection(asyncio.Protocol):
    """One connection.  Requests written in one turn of the event loop go
    out in one ``send`` at the end of it: asyncio's transport would make a
    system call per write (Twisted's already gathers them), and with many
    requests in flight the answers, and so the next requests, come in
    batches."""

    def __init__(self, api, max_frame, loop):
        self.transport = None
        self._loop = loop
        self._out = []
        kwargs = {"max_frame": max_frame} if max_frame else {}
        self.core = ClientCore(api, self._write, clock=loop.time, **kwargs)

    def _write(self, data):
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(data)

    def _flush(self):
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def connection_made(self, transport):
        self.transport = transport
        set_socket_no_delay(transport.get_extra_info("socket"))

    def data_received(self, data):
        if not self.core.data_received(data):
            self.transport.abort()

    def connection_lost(self, exc):
        self.core.connection_lost("connection lost%s" % (": %s" % exc if exc else ""))

    def close(self):
        if self.transport is not None:
            self.transport.close()


class AsyncioClient(Session):
    def __init__(self, addresses, timeout=5.0, loop=None, max_frame=None):
        self._loop = loop
        super().__init__(addresses, None, timeout, max_frame)

    @property
    def loop(self):
        return self._loop or asyncio.get_running_loop()

    def _api(self):
        if self.api is None:
            self.api = txaio.aio.with_config(loop=self.loop)
        return self.api

    async def _connection(self, remaining):
        self._api()  # before anything that may sleep
        return await Session._connection(self, remaining)

    async def _open(self, host, port):
        api = self._api()
        loop = self.loop
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(api, self.max_frame, loop), host, port
            )
        except ConnectionRefusedError:
            raise errors.Unavailable("cannot connect to %s: connection refused" % format_address(host, port)) from None
        except OSError as e:
            raise errors.Unavailable("cannot connect to %s: %s" % (format_address(host, port), e.strerror or e)) from None
        return conn

    async def _bounded(self, awaitable, seconds):
        return await asyncio.wait_for(awaitable, seconds)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()

    async def aclose(self):
        self.close()
