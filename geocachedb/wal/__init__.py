"""The durable Raft log: a segmented, checksummed write-ahead log.

`WriteAheadLog` implements `geocachedb.interfaces.IRaftLog`; the record
format is in `geocachedb.wal.format` and recovery in `geocachedb.wal.replay`.
"""

from geocachedb.wal.log import (
    DEFAULT_SEGMENT_BYTES,
    CorruptLogError,
    LogFailedError,
    LogLockedError,
    WriteAheadLog,
)

__all__ = [
    "WriteAheadLog",
    "CorruptLogError",
    "LogLockedError",
    "LogFailedError",
    "DEFAULT_SEGMENT_BYTES",
]
