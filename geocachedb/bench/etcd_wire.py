"""The few etcd v3 gRPC messages the benchmark needs, encoded by hand.

`geocache-bench --protocol etcd` and `geocache-bench compare-etcd` talk to
etcd 3.4 through ``grpc.aio`` with raw bytes in and out: requests are built
here from the field numbers of etcd's ``api/etcdserverpb/rpc.proto`` and
responses are taken as opaque bytes (only `StatusResponse` is decoded, to
find the leader).  Hand encoding keeps etcd's .proto files and a second
generated module out of the tree, and costs the load generator no more than
a bytes concatenation per request, so it does not favour either system.

The subset of rpc.proto this follows (proto3, so zero values are omitted)::

    message PutRequest   { bytes key = 1; bytes value = 2; int64 lease = 3; ... }
    message RangeRequest { bytes key = 1; bytes range_end = 2; int64 limit = 3;
                           int64 revision = 4; ...; bool serializable = 7; ... }
    message TxnRequest   { repeated Compare compare = 1; repeated RequestOp success = 2; ... }
    message Compare      { CompareResult result = 1; CompareTarget target = 2; bytes key = 3;
                           oneof target_union { int64 version = 4; ... } }
    message RequestOp    { oneof request { RangeRequest request_range = 1;
                           PutRequest request_put = 2; ... } }
    message StatusRequest {}
    message ResponseHeader { uint64 cluster_id = 1; uint64 member_id = 2;
                             int64 revision = 3; uint64 raft_term = 4; }
    message StatusResponse { ResponseHeader header = 1; string version = 2;
                             int64 dbSize = 3; uint64 leader = 4;
                             uint64 raftIndex = 5; uint64 raftTerm = 6; ... }

`tests/test_bench.py` checks these bytes against messages built by the
protobuf runtime from the same field numbers.
"""

PUT = "/etcdserverpb.KV/Put"
TXN = "/etcdserverpb.KV/Txn"
RANGE = "/etcdserverpb.KV/Range"
STATUS = "/etcdserverpb.Maintenance/Status"

_WIRE_VARINT = 0
_WIRE_I64 = 1
_WIRE_LEN = 2
_WIRE_I32 = 5


def varint(n):
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _bytes_field(number, data):
    return varint(number << 3 | _WIRE_LEN) + varint(len(data)) + data


def put_request(key, value):
    """A serialized ``PutRequest{key, value}``."""
    return _bytes_field(1, key) + (_bytes_field(2, value) if value else b"")


def txn_request(key, value):
    """A serialized compare-and-put ``TxnRequest``: ``compare {result:
    LESS, target: VERSION, key, version: 2**40}`` (always true: it is the
    compare's cost being measured) and ``success {request_put {key,
    value}}``.  TxnRequest: compare = 1, success = 2; Compare: result = 1,
    target = 2 (VERSION = 0, omitted), key = 3, version = 4; RequestOp:
    request_put = 2."""
    compare = b"\x08\x02" + _bytes_field(3, key) + b"\x20" + varint(1 << 40)
    op = _bytes_field(2, put_request(key, value))
    return _bytes_field(1, compare) + _bytes_field(2, op)


def range_request(key, serializable=False):
    """A serialized ``RangeRequest`` for the single ``key`` (no range_end):
    linearizable unless ``serializable``."""
    data = _bytes_field(1, key)
    if serializable:
        data += b"\x38\x01"  # field 7 (serializable), varint, true
    return data


def read_varint(data, offset):
    result = shift = 0
    while True:
        if offset >= len(data):
            raise ValueError("truncated varint")
        b = data[offset]
        offset += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, offset
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(data):
    """Decode one message level: a dict field number -> last value (ints for
    varints, bytes for length-delimited fields; fixed-width fields skipped)."""
    out = {}
    offset = 0
    while offset < len(data):
        tag, offset = read_varint(data, offset)
        number, wire = tag >> 3, tag & 7
        if wire == _WIRE_VARINT:
            out[number], offset = read_varint(data, offset)
        elif wire == _WIRE_LEN:
            length, offset = read_varint(data, offset)
            if offset + length > len(data):
                raise ValueError("truncated field %d" % number)
            out[number] = data[offset:offset + length]
            offset += length
        elif wire == _WIRE_I64:
            offset += 8
        elif wire == _WIRE_I32:
            offset += 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
    return out


def parse_status(data):
    """The interesting fields of a serialized ``StatusResponse``."""
    top = fields(data)
    header = fields(top.get(1, b""))
    return {
        "member_id": header.get(2, 0),
        "leader": top.get(4, 0),
        "version": top.get(2, b"").decode("utf-8", "replace"),
        "raft_term": top.get(6, 0),
        "raft_index": top.get(5, 0),
        "db_size": top.get(3, 0),
    }
