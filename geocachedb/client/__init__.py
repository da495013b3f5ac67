"""The Python client of geocachedb, in three flavours sharing one core.

- `TwistedClient` (and the single-connection `GeoCacheClientFactory` /
  `GeoCacheClientProtocol`): Deferreds.
- `AsyncioClient`: ``async with AsyncioClient([...]) as c: await c.put(...)``.
- `BlockingClient`: plain calls, safe from several threads.

Errors are `geocachedb.errors.GeoCacheError` subclasses carrying the
server's code and message.  See docs/CLIENT.md.
"""

from geocachedb.client.asyncio_client import AsyncioClient
from geocachedb.client.blocking import BlockingClient
from geocachedb.client.twisted_client import (
    GeoCacheClientFactory,
    GeoCacheClientProtocol,
    TwistedClient,
)
from geocachedb.errors import (
    GeoCacheError,
    InvalidArgument,
    NotFound,
    NotLeader,
    TooLarge,
    Unavailable,
)

__all__ = [
    "AsyncioClient",
    "BlockingClient",
    "TwistedClient",
    "GeoCacheClientFactory",
    "GeoCacheClientProtocol",
    "GeoCacheError",
    "InvalidArgument",
    "NotFound",
    "NotLeader",
    "TooLarge",
    "Unavailable",
]
