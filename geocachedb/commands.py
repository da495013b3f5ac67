"""The replicated write commands: how each is checked, and how it is
executed against the multi-version key space.

Sits between the server's request handling and the state machine: the
node that receives a write checks it here before proposing it (and the
leader checks every write a follower sends it again, since a bad command
would be applied on every node), and `KVStateMachine.apply` executes each
committed command here.  Execution is deterministic and stages its writes
in one `mvcc.Change`: it either succeeds whole, as one revision, or fails
with a `GeoCacheError` and changes nothing (a txn is never applied half).

Every result is a `pb.Response` without id (the request handler adds the
id and the rest of the header), or for a lone put a `PutApplied` that
becomes one on demand (`response_of`): the same result answers the
client, a forwarded write's follower, and a retry through the dedup table.
"""

from geocachedb import errors
from geocachedb.limits import MAX_KEY_SIZE, MAX_VALUE_SIZE, RESERVED_PREFIX
from geocachedb.mvcc import KIND, PUT, Change
from geocachedb.storage.scan import prefix_end
from geocachedb.wire import geocache_pb2 as pb

MAX_RANGE_LIMIT = 10000
MAX_RANGE_BYTES = 2 * 1024 * 1024
# etcd's defaults: --max-txn-ops 128, --max-request-bytes 1.5 MiB.
MAX_TXN_OPS = 128
MAX_TXN_BYTES = 1536 * 1024
MAX_TXN_DEPTH = 4
# Every range inside one txn shares this budget, so the answer fits a frame.
MAX_TXN_RESPONSE_BYTES = 2 * 1024 * 1024

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_SEQUENTIAL_DIGITS = 20  # a 64-bit number in decimal
_TO_THE_END = b"\x00"  # a range_end meaning "every key >= key" (etcd)


def check_key(key, what="key"):
    if not key:
        raise errors.InvalidArgument("%s must not be empty" % what)
    if key.startswith(RESERVED_PREFIX):
        raise errors.InvalidArgument("keys starting with %r are reserved" % RESERVED_PREFIX)
    if len(key) > MAX_KEY_SIZE:
        raise errors.InvalidArgument(
            "%s of %d bytes is longer than the limit of %d bytes" % (what, len(key), MAX_KEY_SIZE))


def check_value(value, max_value):
    if len(value) > max_value:
        raise errors.TooLarge(
            "value of %d bytes is larger than the limit of %d bytes" % (len(value), max_value))


def delete_bounds(key, range_end):
    """(start, end) of a DeleteRequest or Compare: one key when
    ``range_end`` is empty, ``end`` None for "to the end"."""
    if not range_end:
        return key, key + b"\x00"
    if range_end == _TO_THE_END:
        return key, None
    return key, range_end


def range_bounds(r):
    """(start, end) of a RangeRequest (prefix, or [start, end) with an
    empty end meaning to the end of the key space)."""
    if r.prefix:
        return r.prefix, prefix_end(r.prefix)
    return r.start, r.end or None


def check_range(r, in_txn=False):
    limit = r.limit
    if limit > MAX_RANGE_LIMIT:
        raise errors.InvalidArgument("range limit must be at most %d" % MAX_RANGE_LIMIT)
    if r.sort_order not in (pb.RangeRequest.ASCEND, pb.RangeRequest.DESCEND):
        raise errors.InvalidArgument("unknown sort order %d" % r.sort_order)
    if r.prefix and (r.start or r.end):
        raise errors.InvalidArgument("a range takes a prefix or start/end, not both")
    if in_txn and r.serializable:
        raise errors.InvalidArgument("a range inside a txn is part of it: serializable is not allowed")


def check_delete(d):
    check_key(d.key)
    if d.range_end and d.range_end != _TO_THE_END and d.range_end <= d.key:
        raise errors.InvalidArgument("delete range_end must be after key")


def check_incr(i):
    check_key(i.key)


def check_put_sequential(p, max_value):
    check_key(p.prefix + b"0" * _SEQUENTIAL_DIGITS, "prefix plus its 20-digit number")
    check_value(p.value, max_value)


def check_txn(txn, max_value=MAX_VALUE_SIZE):
    """Raise InvalidArgument unless ``txn`` is well formed: compares with
    a known target and operator, a value of the target's kind, at most
    MAX_TXN_OPS ops in all, and no key written twice by one branch."""
    _check_txn(txn, max_value, [0], 1)


def _check_txn(txn, max_value, ops, depth):
    if depth > MAX_TXN_DEPTH:
        raise errors.InvalidArgument("txns nest at most %d deep" % MAX_TXN_DEPTH)
    for c in txn.compare:
        _check_compare(c)
    return _check_branch(txn.success, max_value, ops, depth) + \
        _check_branch(txn.failure, max_value, ops, depth)


# What each compare target reads from a KV: the same names as Compare's
# target_union fields, so one map serves the check and the evaluation.
_TARGET_FIELD = {
    pb.Compare.VERSION: "version",
    pb.Compare.CREATE: "create_revision",
    pb.Compare.MOD: "mod_revision",
    pb.Compare.VALUE: "value",
}


def _check_compare(c):
    check_key(c.key, "compare key")
    if c.target not in _TARGET_FIELD:
        raise errors.InvalidArgument("compare on %r: unknown target %d" % (c.key, c.target))
    if c.result not in (pb.Compare.EQUAL, pb.Compare.GREATER, pb.Compare.LESS, pb.Compare.NOT_EQUAL):
        raise errors.InvalidArgument("compare on %r: unknown operator %d" % (c.key, c.result))
    given = c.WhichOneof("target_union")
    if given is not None and given != _TARGET_FIELD[c.target]:
        raise errors.InvalidArgument(
            "compare on %r: target is %s but the value given is a %s"
            % (c.key, pb.Compare.CompareTarget.Name(c.target), given))
    if c.range_end and c.range_end != _TO_THE_END and c.range_end <= c.key:
        raise errors.InvalidArgument("compare range_end must be after key")


def _check_branch(ops, max_value, count, depth):
    """Check one branch; return the key intervals it may write."""
    written = []
    for op in ops:
        count[0] += 1
        if count[0] > MAX_TXN_OPS:
            raise errors.InvalidArgument("a txn may have at most %d ops" % MAX_TXN_OPS)
        kind = op.WhichOneof("request")
        if kind == "range":
            check_range(op.range, in_txn=True)
        elif kind == "put":
            check_key(op.put.key)
            check_value(op.put.value, max_value)
            written.append((op.put.key, op.put.key + b"\x00", "put %r" % op.put.key))
        elif kind == "delete":
            check_delete(op.delete)
            start, end = delete_bounds(op.delete.key, op.delete.range_end)
            written.append((start, end, "delete %r" % op.delete.key))
        elif kind == "incr":
            check_incr(op.incr)
            written.append((op.incr.key, op.incr.key + b"\x00", "incr %r" % op.incr.key))
        elif kind == "txn":
            # Only one of its branches runs: either may clash with ours.
            written.extend(_check_txn(op.txn, max_value, count, depth + 1))
        else:
            raise errors.InvalidArgument("empty txn op")
    _reject_overlap(written)
    return written


def _reject_overlap(written):
    # Sorted by start, any overlap shows between neighbours (None = +inf).
    ordered = sorted(written, key=lambda w: w[0])
    for (a_start, a_end, a), (b_start, _, b) in zip(ordered, ordered[1:]):
        if a_end is None or b_start < a_end:
            raise errors.InvalidArgument(
                "the writes of one txn may not overlap: %s and %s" % (a, b))


def check_command(data, max_value=MAX_VALUE_SIZE):
    """Raise unless ``data`` is an encoded Command that a client's write
    could have produced (the leader's check of the writes a follower sends
    it: a bad one would be applied on every node)."""
    if len(data) > MAX_TXN_BYTES + 4096:
        raise errors.TooLarge("command of %d bytes is too large" % len(data))
    cmd = pb.Command.FromString(data)
    op = cmd.WhichOneof("op")
    if op == "put":
        check_key(cmd.put.key)
        check_value(cmd.put.value, max_value)
    elif op == "delete":
        check_delete(cmd.delete)
    elif op == "txn":
        check_txn(cmd.txn, max_value)
    elif op == "incr":
        check_incr(cmd.incr)
    elif op == "put_sequential":
        check_put_sequential(cmd.put_sequential, max_value)
    elif op == "compact":
        if not cmd.compact.revision:
            raise errors.InvalidArgument("compact needs a revision")
    else:
        raise errors.InvalidArgument("not a write command")


def encode(op, body, client_id=0, seq=0, ack_floor=0):
    """An encoded Command: ``body`` (a request message) as operation ``op``."""
    cmd = pb.Command(client_id=client_id, seq=seq, ack_floor=ack_floor)
    getattr(cmd, op).CopyFrom(body)
    return cmd.SerializeToString()


def encode_put(key, value, client_id=0, seq=0, ack_floor=0, prev_kv=False):
    cmd = pb.Command(client_id=client_id, seq=seq, ack_floor=ack_floor)
    put = cmd.put
    put.key = key
    put.value = value
    if prev_kv:
        put.prev_kv = True
    return cmd.SerializeToString()


def encode_delete(key, client_id=0, seq=0, ack_floor=0, range_end=b"", prev_kv=False):
    cmd = pb.Command(client_id=client_id, seq=seq, ack_floor=ack_floor)
    cmd.delete.key = key
    if range_end:
        cmd.delete.range_end = range_end
    if prev_kv:
        cmd.delete.prev_kv = True
    return cmd.SerializeToString()


# ------------------------------------------------------------- execution ---

def execute(space, cmd, op, index, writes):
    """Apply command ``cmd`` (its ``op`` already known) at Raft ``index``:
    stage it, commit it into ``writes`` when it succeeded, and return its
    result Response (an error Response when it failed, nothing changed)."""
    if op == "put":
        return _lone_put(space, cmd.put, index, writes)
    change = Change(space.revision + 1)
    response = pb.Response()
    try:
        if op == "put":
            _put(space, cmd.put, change, response.put)
            response.put.index = index
        elif op == "delete":
            _delete(space, cmd.delete, change, response.delete)
            response.delete.index = index
        elif op == "txn":
            _txn(space, cmd.txn, change, response.txn, [MAX_TXN_RESPONSE_BYTES])
        elif op == "incr":
            _incr(space, cmd.incr, change, response.incr)
        elif op == "put_sequential":
            p = cmd.put_sequential
            check_put_sequential(p, MAX_VALUE_SIZE)
            key = p.prefix + b"%020d" % change.revision
            space.put(key, p.value, change)
            response.put_sequential.key = key
        elif op == "compact":
            _compact(space, cmd.compact.revision, writes)
            response.compact.SetInParent()
        else:
            raise errors.InvalidArgument("not a write command")
    except errors.GeoCacheError as e:
        response = pb.Response()
        e.to_pb(response.error)
        response.header.revision = space.revision
        return response
    revision = space.commit(change, writes)
    response.header.revision = revision
    if op == "put":
        response.put.revision = revision
    elif op == "delete":
        response.delete.revision = revision
    return response


class PutApplied:
    """The result of a lone put, kept small: every replica applies every
    put but at most one answers it, so its Response is built only when
    asked for (`response_of`)."""

    __slots__ = ("index", "revision", "prev")

    def __init__(self, index, revision, prev):
        self.index = index
        self.revision = revision
        self.prev = prev  # the previous KV when prev_kv was asked for, else None

    def response(self):
        response = pb.Response()
        out = response.put
        out.index = self.index
        out.revision = response.header.revision = self.revision
        if self.prev is not None:
            self.prev.to_pb(out.prev_kv)
        return response


def response_of(result):
    """A fresh Response for a command's result (a `PutApplied` or a
    stored Response, which stays as applied)."""
    if type(result) is PutApplied:
        return result.response()
    response = pb.Response()
    response.CopyFrom(result)
    return response


def _lone_put(space, put, index, writes):
    # The hot path: no staging (a put cannot fail half-way).
    prev = space.put_now(put.key, put.value, writes)
    kv = None
    if put.prev_kv and prev is not None and prev[KIND] == PUT:
        kv = space.kv(put.key, prev)
    return PutApplied(index, space.revision, kv)


def _put(space, put, change, out):
    out.SetInParent()
    prev = space.put(put.key, put.value, change)
    if put.prev_kv and prev is not None and prev[KIND] == PUT:
        space.kv(put.key, prev).to_pb(out.prev_kv)


def _delete(space, d, change, out):
    out.SetInParent()
    start, end = delete_bounds(d.key, d.range_end)
    if not d.range_end:
        keys = [d.key]
    else:
        keys = list(space.keys(start, end, change=change))
    count = 0
    for key in keys:
        prev = space.delete(key, change)
        if prev is None:
            continue
        count += 1
        if d.prev_kv:
            space.kv(key, prev).to_pb(out.prev_kvs.add())
    out.count = count
    out.deleted = count > 0


def _incr(space, i, change, out):
    kv = space.get(i.key, 0, change)
    current = 0
    if kv is not None:
        try:
            current = int(kv.value.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise errors.InvalidArgument(
                "incr %r: the value %r is not a decimal integer" % (i.key, kv.value[:40])) from None
        if not _INT64_MIN <= current <= _INT64_MAX:
            raise errors.InvalidArgument("incr %r: the value is not a 64-bit integer" % i.key)
    value = current + i.delta
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise errors.InvalidArgument("incr %r by %d overflows 64 bits" % (i.key, i.delta))
    space.put(i.key, b"%d" % value, change)
    out.value = value


def _compact(space, revision, writes):
    if revision > space.revision:
        raise errors.FutureRevision(
            "cannot compact at %d: the current revision is %d" % (revision, space.revision))
    if revision <= space.compact_revision:
        raise errors.Compacted(
            "revision %d is already compacted; the compact revision is %d"
            % (revision, space.compact_revision))
    space.compact(revision, writes)


def read_range(space, r, out, change=None, max_bytes=MAX_RANGE_BYTES):
    """Serve RangeRequest ``r`` into RangeResponse ``out``."""
    start, end = range_bounds(r)
    kvs, more, count = space.range(
        start, end, r.revision, r.limit, r.keys_only, r.count_only,
        r.min_mod_revision, r.max_mod_revision, r.min_create_revision, r.max_create_revision,
        r.sort_order == pb.RangeRequest.DESCEND, change, max_bytes)
    add = out.kvs.add
    keys_only = r.keys_only
    for kv in kvs:
        kv.to_pb(add(), keys_only)
    out.more = more
    out.count = count
    return sum(len(kv.key) + len(kv.value) for kv in kvs)


def _compare(space, c, change):
    if not c.range_end:
        kv = space.get(c.key, 0, change)
        kvs = [kv] if kv is not None else []
    else:
        start, end = delete_bounds(c.key, c.range_end)
        kvs = [kv for kv in (space.get(k, 0, change) for k in space.keys(start, end, change=change))
               if kv is not None]
    name = _TARGET_FIELD[c.target]
    wanted = getattr(c, name)
    if not kvs:
        if c.target == pb.Compare.VALUE:
            return False  # a missing key has no value to compare
        return _holds(c.result, 0, wanted)
    return all(_holds(c.result, getattr(kv, name), wanted) for kv in kvs)


def _holds(result, have, wanted):
    if result == pb.Compare.EQUAL:
        return have == wanted
    if result == pb.Compare.NOT_EQUAL:
        return have != wanted
    if result == pb.Compare.GREATER:
        return have > wanted
    return have < wanted


def _txn(space, txn, change, out, budget):
    # Compares see the state before the txn plus what an enclosing txn
    # wrote before this one (reads in a txn see its earlier writes).
    succeeded = all(_compare(space, c, change) for c in txn.compare)
    out.succeeded = succeeded
    for op in (txn.success if succeeded else txn.failure):
        result = out.responses.add()
        kind = op.WhichOneof("request")
        if kind == "range":
            budget[0] -= read_range(space, op.range, result.range, change, max(budget[0], 0))
            if budget[0] < 0:
                raise errors.TooLarge("the ranges of this txn return more than %d bytes"
                                      % MAX_TXN_RESPONSE_BYTES)
        elif kind == "put":
            _put(space, op.put, change, result.put)
        elif kind == "delete":
            _delete(space, op.delete, change, result.delete)
        elif kind == "incr":
            _incr(space, op.incr, change, result.incr)
        elif kind == "txn":
            _txn(space, op.txn, change, result.txn, budget)
        else:
            raise errors.InvalidArgument("empty txn op")
