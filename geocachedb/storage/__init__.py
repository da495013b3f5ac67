"""Storage backends, registered by name.

``open_storage("lmdb", path, **options)`` returns an `IStorage`.  A backend
registers itself with `register`; the registry imports backends lazily so
that, say, the B+Tree never loads for an LMDB node.  The conformance suite in
tests/test_storage_conformance.py runs against every name in `BACKENDS`.
"""

import importlib
from itertools import chain
from operator import itemgetter

# name -> "module:factory"; the factory is called as factory(path, **options)
BACKENDS = {
    "btree": "geocachedb.storage.btree:BTreeStorage",
    "lmdb": "geocachedb.storage.lmdb:LMDBStorage",
    "memory": "geocachedb.storage.memory:MemoryStorage",
}

DEFAULT = "lmdb"


def register(name, target):
    """Register ``target`` ("module:callable") under ``name``."""
    BACKENDS[name] = target


def available():
    """The names of the registered backends whose module imports."""
    names = []
    for name in sorted(BACKENDS):
        try:
            _factory(name)
        except ImportError:
            continue
        names.append(name)
    return names


def _factory(name):
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(
            "unknown storage backend %r (choose from %s)"
            % (name, ", ".join(sorted(BACKENDS)))
        ) from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def open_storage(name, path, **options):
    """Open the backend ``name`` with its files under ``path``."""
    return _factory(name)(path, **options)


def checked_batch(puts, deletes):
    """An `IStorage.apply_batch` argument pair as lists of bytes, every key
    checked (`check_key`).  The replicated path hands over bytes only, and
    this runs for every key of every flush: that case is checked with
    C-level passes; other buffers are copied to bytes one by one."""
    puts = list(puts)
    deletes = list(deletes)
    keys = list(map(_first, puts))
    values = list(map(_second, puts))
    if _BYTES.issuperset(map(type, chain(keys, values, deletes))):
        if (keys or deletes) and min(map(len, chain(keys, deletes))) == 0:
            raise ValueError("empty key")
        return list(zip(keys, values)), deletes
    puts = [(bytes(k), bytes(v)) for k, v in puts]
    deletes = [bytes(k) for k in deletes]
    for key, _ in puts:
        check_key(key)
    for key in deletes:
        check_key(key)
    return puts, deletes


_BYTES = frozenset((bytes,))
_first = itemgetter(0)
_second = itemgetter(1)


def check_key(key):
    """The one key rule every backend shares."""
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError("keys are bytes, not %s" % type(key).__name__)
    if not key:
        raise ValueError("empty key")
