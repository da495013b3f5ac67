"""The Python client of geocachedb, in three flavours sharing one core.

- `TwistedClient` (and the single-connection `GeoCacheClientFactory` /
  `GeoCacheClientProtocol`): Deferreds.
- `AsyncioClient`: ``async with AsyncioClient([...]) as c: await c.put(...)``.
- `BlockingClient`: plain calls, safe from several threads.

Errors are `geocachedb.errors.GeoCacheError` subclasses carrying the
server's code and message.  See docs/CLIENT.md.

Revisions (etcd v3 style): ``get(k, revision=N)``, ``get_kv`` (a `KeyValue`
with create/mod revision and version), ``range_kvs``, ``put_kv``,
``delete_range``, ``incr``, ``put_sequential``, ``compact`` and
transactions: ``c.txn().when(Compare.mod(k) == 5).then(Op.put(k, v)).commit()``.
"""

from geocachedb.client.asyncio_client import AsyncioClient
from geocachedb.client.blocking import BlockingClient
from geocachedb.client.twisted_client import (
    GeoCacheClientFactory,
    GeoCacheClientProtocol,
    TwistedClient,
)
from geocachedb.client.results import DeleteResult, KeyValue, PutResult, RangeResult, TxnResult
from geocachedb.client.txn import Compare, Op, Txn
from geocachedb.errors import (
    Compacted,
    FutureRevision,
    GeoCacheError,
    InvalidArgument,
    NotFound,
    NotLeader,
    SessionExpired,
    TooLarge,
    Unavailable,
)

__all__ = [
    "AsyncioClient",
    "BlockingClient",
    "TwistedClient",
    "GeoCacheClientFactory",
    "GeoCacheClientProtocol",
    "Compare",
    "Op",
    "Txn",
    "KeyValue",
    "RangeResult",
    "PutResult",
    "DeleteResult",
    "TxnResult",
    "Compacted",
    "FutureRevision",
    "SessionExpired",
    "GeoCacheError",
    "InvalidArgument",
    "NotFound",
    "NotLeader",
    "TooLarge",
    "Unavailable",
]
