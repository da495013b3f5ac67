"""The blocking client, for scripts and threads.

    with BlockingClient(["127.0.0.1:50051"], timeout=5.0) as c:
        c.put(b"k", b"v")
        assert c.get(b"k") == b"v"

It runs an `AsyncioClient` on a private event loop in a daemon thread and
hands each call to it, so it is safe to call from several threads at once
and their requests share one pipelined connection.
"""

import asyncio
import hashlib
import os
import threading

from geocachedb import errors
from geocachedb.client.asyncio_client import AsyncioClient
from geocachedb.limits import RESERVED_PREFIX
from geocachedb.snapshot_format import SnapshotReader


class BlockingClient:
    def __init__(self, addresses, timeout=5.0):
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="geocache-client", daemon=True)
        self._thread.start()
        self._client = AsyncioClient(addresses, timeout=timeout, loop=self._loop)
        self._closed = False

    def _run(self, coroutine, timeout=None):
        if self._closed:
            coroutine.close()
            raise errors.Unavailable("client is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result((timeout or self.timeout) + 1.0)
        except TimeoutError:
            future.cancel()
            raise errors.Unavailable("timed out after %.1fs" % (timeout or self.timeout)) from None

    def connect(self) -> None:
        return self._run(self._client.connect(), timeout=self.timeout * len(self._client.addresses))

    # ``timeout``: seconds for this call, retries and failover included
    # (default: the client's).

    def get(self, key: bytes, serializable: bool = False, timeout=None) -> "bytes | None":
        return self._run(self._client.get(key, serializable, timeout), timeout)

    def put(self, key: bytes, value: bytes, timeout=None) -> None:
        return self._run(self._client.put(key, value, timeout), timeout)

    def delete(self, key: bytes, timeout=None) -> bool:
        return self._run(self._client.delete(key, timeout), timeout)

    def range(self, start=b"", end=b"", prefix=b"", limit=0, serializable=False, timeout=None):
        return self._run(self._client.range(start, end, prefix, limit, serializable, timeout), timeout)

    def status(self, timeout=None):
        return self._run(self._client.status(timeout), timeout)

    def backup(self, path):
        """Write a consistent backup to ``path`` (the snapshot stream, which
        carries a CRC32); verified before it is moved into place.  Returns
        ``(applied_index, keys, sha256 hex)``."""
        tmp = path + ".part"
        digest = hashlib.sha256()
        with open(tmp, "wb") as f:
            def write(chunk):
                digest.update(chunk)
                f.write(chunk)

            index = self._run(self._client.backup(write), timeout=max(self.timeout, 600.0))
            f.flush()
            os.fsync(f.fileno())

        def chunks():
            with open(tmp, "rb") as f:
                while True:
                    data = f.read(1 << 20)
                    if not data:
                        return
                    yield data

        # Reading it all checks the CRC; the count is of user keys only.
        keys = sum(1 for k, _ in SnapshotReader(chunks()).items() if not k.startswith(RESERVED_PREFIX))
        os.replace(tmp, path)
        return index, keys, digest.hexdigest()

    def members(self, timeout=None):
        return self._run(self._client.members(timeout), timeout)

    def add_member(self, node_id, address, learner=False, timeout=None):
        return self._run(self._client.add_member(node_id, address, learner, timeout), timeout)

    def promote_member(self, node_id, timeout=None):
        return self._run(self._client.promote_member(node_id, timeout), timeout)

    def remove_member(self, node_id, timeout=None):
        return self._run(self._client.remove_member(node_id, timeout), timeout)

    def transfer_leader(self, node_id, timeout=None):
        return self._run(self._client.transfer_leader(node_id, timeout), timeout)

    def close(self):
        if self._closed:
            return
        self._closed = True

        async def shutdown():
            self._client.close()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
