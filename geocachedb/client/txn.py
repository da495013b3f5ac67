"""A Pythonic builder for compare-and-swap transactions (pure: it only
builds protobufs).

    result = c.txn().when(
        Compare.mod(b"k") == 5,
        Compare.value(b"k2") != b"x",
    ).then(
        Op.put(b"k", b"v"), Op.incr(b"n", 1),
    ).otherwise(
        Op.get(b"k"),
    ).commit()

If every compare holds, the ``then`` ops run, else the ``otherwise`` ops; it
is all one revision.  ``commit()`` returns what the client's flavour returns
(a Deferred, an awaitable, or the value) of a `TxnResult`.  A transaction
goes the way of every write: numbered for exactly-once retries.
"""

from geocachedb.wire import geocache_pb2 as pb

__all__ = ["Compare", "Op", "Txn", "prefix_end"]


def _check_bytes(name, value):
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError("%s must be bytes, not %s" % (name, type(value).__name__))
    return bytes(value)


def prefix_end(prefix):
    """The end of the key range ``[prefix, end)`` of every key starting with
    ``prefix``; b"\\x00" (every key >= prefix) when there is none."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\x00"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _key_range(key, range_end, prefix):
    """(key, range_end) from either form."""
    if prefix:
        if key or range_end:
            raise ValueError("give a key (and range_end) or a prefix, not both")
        prefix = _check_bytes("prefix", prefix)
        return prefix, prefix_end(prefix)
    return _check_bytes("key", key), _check_bytes("range_end", range_end)


class _Target:
    """One side of a compare: ``Compare.mod(k) == 5`` builds a `pb.Compare`."""

    __hash__ = None  # == builds a compare, it does not compare

    def __init__(self, target, field, key, range_end, prefix):
        self._target = target
        self._field = field
        self._key, self._range_end = _key_range(key, range_end, prefix)

    def _compare(self, result, other):
        c = pb.Compare(result=result, target=self._target, key=self._key, range_end=self._range_end)
        if self._field == "value":
            setattr(c, "value", _check_bytes("the value compared with", other))
        else:
            if isinstance(other, bool) or not isinstance(other, int):
                raise TypeError("%s is compared with an int, not %s" % (self._field, type(other).__name__))
            setattr(c, self._field, other)
        return c

    def __eq__(self, other):
        return self._compare(pb.Compare.EQUAL, other)

    def __ne__(self, other):
        return self._compare(pb.Compare.NOT_EQUAL, other)

    def __lt__(self, other):
        return self._compare(pb.Compare.LESS, other)

    def __gt__(self, other):
        return self._compare(pb.Compare.GREATER, other)

    def __le__(self, other):
        raise TypeError("compares are ==, !=, < and > only (as etcd's)")

    __ge__ = __le__

    def __repr__(self):
        return "Compare.%s(%r)" % (pb.Compare.CompareTarget.Name(self._target).lower(), self._key)


class Compare:
    """``Compare.value/version/create/mod(key, range_end=b"", prefix=b"")``
    compared with ``==``, ``!=``, ``<`` or ``>`` is a `pb.Compare`.  A
    missing key has version, create and mod revision 0.  With ``range_end``
    (b"\\x00": every key >= key) or ``prefix`` every key in the range must
    match."""

    @staticmethod
    def value(key=b"", range_end=b"", prefix=b""):
        return _Target(pb.Compare.VALUE, "value", key, range_end, prefix)

    @staticmethod
    def version(key=b"", range_end=b"", prefix=b""):
        return _Target(pb.Compare.VERSION, "version", key, range_end, prefix)

    @staticmethod
    def create(key=b"", range_end=b"", prefix=b""):
        return _Target(pb.Compare.CREATE, "create_revision", key, range_end, prefix)

    @staticmethod
    def mod(key=b"", range_end=b"", prefix=b""):
        return _Target(pb.Compare.MOD, "mod_revision", key, range_end, prefix)

    create_revision = create
    mod_revision = mod


def range_request(start=b"", end=b"", prefix=b"", limit=0, serializable=False, revision=0,
                  keys_only=False, count_only=False, min_mod_revision=0, max_mod_revision=0,
                  min_create_revision=0, max_create_revision=0, sort_order=None, descending=False,
                  out=None):
    """Fill (or make) a `pb.RangeRequest`.  ``sort_order``: "ascend" /
    "descend" or the enum value; ``descending=True`` is the same as
    "descend"."""
    r = out if out is not None else pb.RangeRequest()
    r.start = _check_bytes("start", start)
    r.end = _check_bytes("end", end)
    r.prefix = _check_bytes("prefix", prefix)
    r.limit = limit
    r.serializable = bool(serializable)
    r.revision = revision
    r.keys_only = bool(keys_only)
    r.count_only = bool(count_only)
    r.min_mod_revision = min_mod_revision
    r.max_mod_revision = max_mod_revision
    r.min_create_revision = min_create_revision
    r.max_create_revision = max_create_revision
    if sort_order is None:
        order = pb.RangeRequest.DESCEND if descending else pb.RangeRequest.ASCEND
    elif isinstance(sort_order, str):
        try:
            order = pb.RangeRequest.SortOrder.Value(sort_order.upper())
        except ValueError:
            raise ValueError("sort_order is 'ascend' or 'descend', not %r" % sort_order) from None
    else:
        order = sort_order
    r.sort_order = order
    return r


def delete_request(key, range_end=b"", prefix=b"", prev_kv=False, out=None):
    d = out if out is not None else pb.DeleteRequest()
    d.key, d.range_end = _key_range(key, range_end, prefix)
    d.prev_kv = bool(prev_kv)
    return d


class Op:
    """The operations of a transaction, each a `pb.RequestOp`."""

    @staticmethod
    def put(key, value, prev_kv=False):
        return pb.RequestOp(put=pb.PutRequest(key=_check_bytes("key", key), value=_check_bytes("value", value),
                                              prev_kv=bool(prev_kv)))

    @staticmethod
    def delete(key=b"", range_end=b"", prefix=b"", prev_kv=False):
        """One key; or [key, range_end) (b"\\x00": every key >= key); or
        every key under ``prefix``."""
        return pb.RequestOp(delete=delete_request(key, range_end, prefix, prev_kv))

    @staticmethod
    def get(key, revision=0, keys_only=False):
        """Read one key (its result is a RangeResult of at most one kv)."""
        key = _check_bytes("key", key)
        return pb.RequestOp(range=range_request(start=key, end=key + b"\x00", revision=revision,
                                                keys_only=keys_only))

    @staticmethod
    def range(start=b"", end=b"", prefix=b"", limit=0, **options):
        """A range read, with `range_request`'s options."""
        return pb.RequestOp(range=range_request(start, end, prefix, limit, **options))

    @staticmethod
    def incr(key, delta=1):
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError("delta must be an int, not %s" % type(delta).__name__)
        return pb.RequestOp(incr=pb.IncrRequest(key=_check_bytes("key", key), delta=delta))

    @staticmethod
    def txn(txn):
        """A nested transaction: a `Txn` (never committed itself) or a
        `pb.TxnRequest`."""
        return pb.RequestOp(txn=txn.to_pb() if isinstance(txn, Txn) else txn)


def _check_all(kind, items):
    for item in items:
        if not isinstance(item, kind):
            raise TypeError("expected %s, not %r (write Compare.mod(k) == 5, Op.put(k, v), ...)"
                            % (kind.__name__, item))
    return items


class Txn:
    """Built by ``client.txn()``; ``when``, ``then`` and ``otherwise`` each
    add to their part (in any order, as often as needed) and return the
    Txn; ``commit(timeout=None)`` sends it.  ``Txn()`` without a client
    builds a nested transaction for `Op.txn`."""

    def __init__(self, submit=None):
        self._submit = submit
        self._compare = []
        self._success = []
        self._failure = []

    def when(self, *compares):
        self._compare.extend(_check_all(pb.Compare, compares))
        return self

    def then(self, *ops):
        self._success.extend(_check_all(pb.RequestOp, ops))
        return self

    def otherwise(self, *ops):
        self._failure.extend(_check_all(pb.RequestOp, ops))
        return self

    # etcd's names
    If, Then, Else = when, then, otherwise

    def to_pb(self):
        return pb.TxnRequest(compare=self._compare, success=self._success, failure=self._failure)

    def commit(self, timeout=None):
        if self._submit is None:
            raise ValueError("this Txn has no client: make it with client.txn(), or nest it with Op.txn")
        return self._submit(self.to_pb(), timeout)

    def __repr__(self):
        return "Txn(%d compares, %d success ops, %d failure ops)" % (
            len(self._compare), len(self._success), len(self._failure))
