"""Storage backends, registered by name.

``open_storage("lmdb", path, **options)`` returns an `IStorage`.  A backend
registers itself with `register`; the registry imports backends lazily so
that, say, the B+Tree never loads for an LMDB node.  The conformance suite in
tests/test_storage_conformance.py runs against every name in `BACKENDS`.
"""

import importlib

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


def check_key(key):
    """The one key rule every backend shares."""
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError("keys are bytes, not %s" % type(key).__name__)
    if not key:
        raise ValueError("empty key")
