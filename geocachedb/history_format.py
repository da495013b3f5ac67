"""How history is laid out in storage: one *event* per version of a key,
under ``HISTORY_PREFIX + revision (8 bytes, big-endian) + sub (4 bytes)``.

Shared by the multi-version key space (`geocachedb.mvcc`), which writes
and reads it, and the client, which counts the live keys of a backup it
has pulled (a backup is the storage, so it holds history, not plain keys).
A put event holds the key, its value and metadata; a tombstone holds the
key.  ``sub`` numbers the changes of one revision (a txn, a delete-range).
"""

import struct

from geocachedb.limits import RESERVED_PREFIX

HISTORY_PREFIX = RESERVED_PREFIX + b"h/"

PUT, DELETE = 1, 2  # event kinds (expire and revoke come with leases)

_HKEY = struct.Struct(">QI")  # revision, sub
_EVENT = struct.Struct(">BHQQQq")  # kind, key length, create, mod, version, lease


def history_key(revision, sub):
    return HISTORY_PREFIX + _HKEY.pack(revision, sub)


def parse_history_key(hkey):
    """(revision, sub) of a history key."""
    return _HKEY.unpack_from(hkey, len(HISTORY_PREFIX))


def encode_event(kind, key, create, mod, version, lease, value=b""):
    return _EVENT.pack(kind, len(key), create, mod, version, lease) + key + value


def decode_event(data):
    """(kind, key, create, mod, version, lease, value)."""
    kind, klen, create, mod, version, lease = _EVENT.unpack_from(data, 0)
    start = _EVENT.size
    return kind, data[start:start + klen], create, mod, version, lease, data[start + klen:]


def count_live(pairs):
    """The number of keys that exist at the end of the history among the
    storage ``(key, value)`` ``pairs`` (in key order, as a snapshot has
    them: history in revision order)."""
    live = set()
    for key, value in pairs:
        if not key.startswith(HISTORY_PREFIX):
            continue
        kind, user_key = decode_event(value)[:2]
        if kind == PUT:
            live.add(user_key)
        else:
            live.discard(user_key)
    return len(live)
