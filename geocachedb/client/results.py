"""What the revision-aware calls return: plain Python objects made from the
wire's messages, so callers never handle protobufs.

`KeyValue` is a key with its metadata (etcd's mvccpb.KeyValue); the result
tuples carry the revision the answer was served at (the response header's)."""

from collections import namedtuple


class KeyValue:
    """A key, its value and metadata: ``create_revision`` (the revision
    that created it), ``mod_revision`` (its last change), ``version`` (1 on
    create, +1 per put, reset by a delete) and ``lease``."""

    __slots__ = ("key", "value", "create_revision", "mod_revision", "version", "lease")

    def __init__(self, key, value=b"", create_revision=0, mod_revision=0, version=0, lease=0):
        self.key = key
        self.value = value
        self.create_revision = create_revision
        self.mod_revision = mod_revision
        self.version = version
        self.lease = lease

    @classmethod
    def from_pb(cls, kv):
        return cls(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)

    def _tuple(self):
        return (self.key, self.value, self.create_revision, self.mod_revision, self.version, self.lease)

    def __eq__(self, other):
        if not isinstance(other, KeyValue):
            return NotImplemented
        return self._tuple() == other._tuple()

    def __hash__(self):
        return hash(self._tuple())

    def __repr__(self):
        return "KeyValue(key=%r, value=%r, create_revision=%d, mod_revision=%d, version=%d, lease=%d)" % self._tuple()


# kvs: [KeyValue]; more: the limit cut the answer; count: every key that
# matched; revision: the revision the range was served at.
RangeResult = namedtuple("RangeResult", "kvs more count revision")
# revision: the revision of the put; prev_kv: the KeyValue it replaced
# (None when the key did not exist or it was not asked for).
PutResult = namedtuple("PutResult", "revision prev_kv")
# count: keys deleted; prev_kvs: [KeyValue] when asked for.
DeleteResult = namedtuple("DeleteResult", "count prev_kvs revision")
# succeeded: the compares held; responses: one result per op run (RangeResult,
# PutResult, DeleteResult, TxnResult, or the new int value of an incr).
TxnResult = namedtuple("TxnResult", "succeeded responses revision")


def kv_or_none(message, field):
    """The KeyValue in ``message.field``, or None when it is not set."""
    return KeyValue.from_pb(getattr(message, field)) if message.HasField(field) else None


def range_result(r, revision):
    return RangeResult([KeyValue.from_pb(kv) for kv in r.kvs], r.more, r.count, revision)


def put_result(p, revision):
    return PutResult(p.revision or revision, kv_or_none(p, "prev_kv"))


def delete_result(d, revision):
    return DeleteResult(d.count, [KeyValue.from_pb(kv) for kv in d.prev_kvs], d.revision or revision)


def txn_result(t, revision):
    return TxnResult(t.succeeded, [response_op_result(op, revision) for op in t.responses], revision)


def response_op_result(op, revision):
    kind = op.WhichOneof("response")
    if kind == "range":
        return range_result(op.range, revision)
    if kind == "put":
        return put_result(op.put, revision)
    if kind == "delete":
        return delete_result(op.delete, revision)
    if kind == "txn":
        return txn_result(op.txn, revision)
    if kind == "incr":
        return op.incr.value
    return None
