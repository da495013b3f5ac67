"""Moved to `geocachedb.snapshot_format` (the format is shared with the
client, which must not import the storage package).  This name stays only
until geocachedb/replica.py imports SnapshotReader from there; then delete it.
"""

from geocachedb.snapshot_format import CHUNK_SIZE, MAGIC, SnapshotReader, encode  # noqa: F401
