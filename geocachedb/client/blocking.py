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
from geocachedb.client.results import DeleteResult, KeyValue, PutResult, RangeResult  # noqa: F401
from geocachedb.client.txn import Txn
from geocachedb.history_format import count_live
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

    def get(self, key: bytes, serializable: bool = False, timeout=None, revision: int = 0) -> "bytes | None":
        return self._run(self._client.get(key, serializable, timeout, revision), timeout)

    def get_kv(self, key: bytes, revision: int = 0, serializable: bool = False, timeout=None) -> "KeyValue | None":
        return self._run(self._client.get_kv(key, revision, serializable, timeout), timeout)

    def put(self, key: bytes, value: bytes, timeout=None, prev_kv: bool = False) -> "None | KeyValue":
        return self._run(self._client.put(key, value, timeout, prev_kv), timeout)

    def put_kv(self, key: bytes, value: bytes, prev_kv: bool = False, timeout=None) -> PutResult:
        return self._run(self._client.put_kv(key, value, prev_kv, timeout), timeout)

    def delete(self, key: bytes, timeout=None) -> bool:
        return self._run(self._client.delete(key, timeout), timeout)

    def delete_range(self, key=b"", range_end=b"", prefix=b"", prev_kv=False, timeout=None) -> DeleteResult:
        return self._run(self._client.delete_range(key, range_end, prefix, prev_kv, timeout), timeout)

    def range(self, start=b"", end=b"", prefix=b"", limit=0, serializable=False, timeout=None, **options):
        return self._run(self._client.range(start, end, prefix, limit, serializable, timeout, **options), timeout)

    def range_kvs(self, start=b"", end=b"", prefix=b"", limit=0, serializable=False, timeout=None,
                  **options) -> RangeResult:
        return self._run(self._client.range_kvs(start, end, prefix, limit, serializable, timeout, **options),
                         timeout)

    def txn(self) -> Txn:
        """``c.txn().when(...).then(...).otherwise(...).commit()`` -> TxnResult."""
        return Txn(lambda request, timeout: self._run(self._client.call("txn", txn=request, timeout=timeout),
                                                      timeout))

    def incr(self, key: bytes, delta: int = 1, timeout=None) -> int:
        return self._run(self._client.incr(key, delta, timeout), timeout)

    def put_sequential(self, prefix: bytes, value: bytes, timeout=None) -> bytes:
        return self._run(self._client.put_sequential(prefix, value, timeout), timeout)

    def compact(self, revision: int, timeout=None) -> None:
        return self._run(self._client.compact(revision, timeout), timeout)

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

        # Reading it all checks the CRC; the count is of the keys that
        # exist at the backup's revision.
        keys = count_live(SnapshotReader(chunks()).items())
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
