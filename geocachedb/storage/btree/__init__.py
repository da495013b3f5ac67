"""geocachedb's own on-disk B+Tree storage backend (``--storage btree``).

One file of 4 KiB pages, copy-on-write with two alternating meta pages for
crash safety, a free list that reuses pages, overflow chains for large
values, and a checker (``python -m geocachedb.storage.btree.check FILE``).

Modules: `node` (page layouts), `pager` (file, meta, free list, cache,
commit), `tree` (the B+Tree algorithms), `storage` (`BTreeStorage`, the
IStorage), `check` (the offline checker), `errors`.
"""

from geocachedb.storage.btree.errors import (
    BTreeFileError,
    CorruptFileError,
    FileLockedError,
    NotABTreeFileError,
    StorageFailedError,
)
from geocachedb.storage.btree.storage import FILENAME, BTreeStorage

__all__ = [
    "BTreeStorage",
    "FILENAME",
    "BTreeFileError",
    "CorruptFileError",
    "FileLockedError",
    "NotABTreeFileError",
    "StorageFailedError",
]
