"""The revision-aware client API without a server: the txn builder's
protobufs, requests and results, the SESSION_EXPIRED renewal of a write's
first attempt, and the CLI's etcdctl-style txn parser."""

import io
import struct

import txaio.tx
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from geocachedb import errors
from geocachedb.client import Compare, KeyValue, Op, Txn
from geocachedb.client.cli import UsageError, parse_compare, parse_op, parse_txn, run_command
from geocachedb.client.core import ClientCore, build_request, result_of
from geocachedb.client.session import Session
from geocachedb.client.txn import prefix_end
from geocachedb.wire import geocache_pb2 as pb


class CompareTests(SynchronousTestCase):
    def test_each_target_and_operator(self):
        self.assertEqual(Compare.mod(b"k") == 5,
                         pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.MOD, key=b"k", mod_revision=5))
        self.assertEqual(Compare.value(b"k") != b"x",
                         pb.Compare(result=pb.Compare.NOT_EQUAL, target=pb.Compare.VALUE, key=b"k", value=b"x"))
        self.assertEqual(Compare.version(b"k") > 0,
                         pb.Compare(result=pb.Compare.GREATER, target=pb.Compare.VERSION, key=b"k", version=0))
        c = Compare.create(b"k") < 3
        self.assertEqual((c.result, c.target, c.create_revision), (pb.Compare.LESS, pb.Compare.CREATE, 3))
        # 0 is set explicitly in the oneof (a missing key's revision).
        self.assertEqual((Compare.create(b"k") == 0).WhichOneof("target_union"), "create_revision")

    def test_ranges_and_prefixes(self):
        c = Compare.version(b"a", range_end=b"b") == 1
        self.assertEqual((c.key, c.range_end), (b"a", b"b"))
        c = Compare.value(prefix=b"p/") == b"v"
        self.assertEqual((c.key, c.range_end), (b"p/", b"p0"))
        self.assertEqual(prefix_end(b"a\xff\xff"), b"b")
        self.assertEqual(prefix_end(b"\xff"), b"\x00")

    def test_bad_operands_are_type_errors(self):
        self.assertRaises(TypeError, lambda: Compare.mod(b"k") == b"5")
        self.assertRaises(TypeError, lambda: Compare.value(b"k") == "text")
        self.assertRaises(TypeError, lambda: Compare.mod("k"))
        self.assertRaises(TypeError, lambda: Compare.mod(b"k") >= 1)
        self.assertRaises(ValueError, lambda: Compare.mod(b"k", prefix=b"p"))


class OpTests(SynchronousTestCase):
    def test_ops(self):
        self.assertEqual(Op.put(b"k", b"v", prev_kv=True),
                         pb.RequestOp(put=pb.PutRequest(key=b"k", value=b"v", prev_kv=True)))
        self.assertEqual(Op.delete(b"k").delete, pb.DeleteRequest(key=b"k"))
        self.assertEqual(Op.delete(prefix=b"p").delete, pb.DeleteRequest(key=b"p", range_end=b"q"))
        get = Op.get(b"k", revision=4).range
        self.assertEqual((get.start, get.end, get.revision), (b"k", b"k\x00", 4))
        r = Op.range(prefix=b"p", limit=3, descending=True, keys_only=True).range
        self.assertEqual((r.prefix, r.limit, r.sort_order, r.keys_only), (b"p", 3, pb.RangeRequest.DESCEND, True))
        self.assertEqual(Op.incr(b"n", -2).incr, pb.IncrRequest(key=b"n", delta=-2))
        self.assertRaises(TypeError, Op.incr, b"n", 1.5)
        self.assertRaises(TypeError, Op.put, b"k", "text")

    def test_nested_txn(self):
        inner = Txn().when(Compare.version(b"a") == 0).then(Op.put(b"a", b"1"))
        op = Op.txn(inner)
        self.assertEqual(op.txn.success[0].put.key, b"a")
        self.assertEqual(len(op.txn.compare), 1)


class TxnBuilderTests(SynchronousTestCase):
    def test_builds_the_request_and_commits_through_the_submitter(self):
        sent = []
        t = Txn(lambda request, timeout: sent.append((request, timeout)) or "result")
        t.when(Compare.mod(b"k") == 5, Compare.value(b"k2") != b"x")
        t.then(Op.put(b"k", b"v"), Op.incr(b"k3", 1)).otherwise(Op.get(b"k"))
        self.assertEqual(t.commit(timeout=2), "result")
        request, timeout = sent[0]
        self.assertEqual(timeout, 2)
        self.assertEqual([c.key for c in request.compare], [b"k", b"k2"])
        self.assertEqual([op.WhichOneof("request") for op in request.success], ["put", "incr"])
        self.assertEqual([op.WhichOneof("request") for op in request.failure], ["range"])

    def test_a_txn_without_client_cannot_commit_and_parts_are_type_checked(self):
        self.assertRaises(ValueError, Txn().commit)
        self.assertRaises(TypeError, Txn().when, Op.put(b"k", b"v"))
        self.assertRaises(TypeError, Txn().then, Compare.mod(b"k") == 1)

    def test_the_request_is_a_numbered_write(self):
        request = build_request("txn", txn=Txn().then(Op.put(b"k", b"v")).to_pb())
        self.assertEqual(request.WhichOneof("body"), "txn")
        from geocachedb.client.core import WRITES
        self.assertIn("txn", WRITES)
        self.assertIn("incr", WRITES)


class RequestResultTests(SynchronousTestCase):
    def test_requests(self):
        self.assertEqual(build_request("get", b"k", revision=7).get.revision, 7)
        self.assertTrue(build_request("put_kv", b"k", b"v", prev_kv=True).put.prev_kv)
        d = build_request("delete_range", b"a", range_end=b"\x00", prev_kv=True).delete
        self.assertEqual((d.key, d.range_end, d.prev_kv), (b"a", b"\x00", True))
        r = build_request("range_kvs", prefix=b"p", revision=3, count_only=True, min_mod_revision=2,
                          sort_order="descend").range
        self.assertEqual((r.revision, r.count_only, r.min_mod_revision, r.sort_order),
                         (3, True, 2, pb.RangeRequest.DESCEND))
        self.assertEqual(build_request("incr", b"n", delta=3).incr.delta, 3)
        self.assertEqual(build_request("put_sequential", b"q/", b"v").put_sequential.prefix, b"q/")
        self.assertEqual(build_request("compact", revision=9).compact.revision, 9)
        self.assertRaises(ValueError, build_request, "compact", revision=0)

    def test_results(self):
        kv = pb.KeyValue(key=b"k", value=b"v", create_revision=2, mod_revision=5, version=3)
        response = pb.Response(get=pb.GetResponse(found=True, value=b"v", kv=kv))
        response.header.revision = 9
        self.assertEqual(result_of("get", response), b"v")
        self.assertEqual(result_of("get_kv", response), KeyValue(b"k", b"v", 2, 5, 3, 0))
        self.assertIsNone(result_of("get_kv", pb.Response(get=pb.GetResponse(found=False))))
        response = pb.Response(put=pb.PutResponse(revision=10, prev_kv=kv))
        self.assertIsNone(result_of("put", response))
        self.assertEqual(result_of("put_prev", response).mod_revision, 5)
        self.assertEqual(result_of("put_kv", response), (10, KeyValue.from_pb(kv)))
        self.assertIsNone(result_of("put_kv", pb.Response(put=pb.PutResponse(revision=1))).prev_kv)
        response = pb.Response(range=pb.RangeResponse(kvs=[kv], more=True, count=4))
        response.header.revision = 9
        self.assertEqual(result_of("range", response), ([(b"k", b"v")], True))
        self.assertEqual(result_of("range_kvs", response), ([KeyValue.from_pb(kv)], True, 4, 9))
        txn = pb.TxnResponse(succeeded=True, responses=[
            pb.ResponseOp(put=pb.PutResponse(revision=9)), pb.ResponseOp(incr=pb.IncrResponse(value=4)),
            pb.ResponseOp(delete=pb.DeleteResponse(count=2, revision=9))])
        response = pb.Response(txn=txn)
        response.header.revision = 9
        result = result_of("txn", response)
        self.assertEqual(result.succeeded, True)
        self.assertEqual(result.revision, 9)
        self.assertEqual(result.responses, [(9, None), 4, (2, [], 9)])
        self.assertEqual(result_of("incr", pb.Response(incr=pb.IncrResponse(value=-3))), -3)


# -- SESSION_EXPIRED ---------------------------------------------------------


def frame(response):
    data = response.SerializeToString()
    return struct.pack(">I", len(data)) + data


class FakeConnection:
    def __init__(self, api, answer):
        self.sent = []
        self.answer = answer
        self.core = ClientCore(api, self._write)

    def _write(self, data):
        request = pb.Request.FromString(data[4:])
        self.sent.append(request)
        response = self.answer(request, len(self.sent))
        response.id = request.id
        self.core.data_received(frame(response))

    def close(self):
        self.core.connection_lost("closed")


def expired():
    response = pb.Response()
    errors.SessionExpired("session expired").to_pb(response.error)
    return response


class FakeSession(Session):
    def __init__(self, answer, addresses=("127.0.0.1:1",)):
        super().__init__(list(addresses), txaio.tx.with_config(), timeout=5.0)
        self.connections = []
        self._answer = answer

    def _open(self, host, port):
        conn = FakeConnection(self.api, self._answer)
        self.connections.append(conn)
        return defer.succeed(conn)

    async def _bounded(self, awaitable, seconds):
        return await awaitable


class SessionExpiredTests(SynchronousTestCase):
    def session(self, answer, **kwargs):
        s = FakeSession(answer, **kwargs)

        def close():  # no timer left behind on the reactor
            s.close()
            for conn in s.connections:
                conn.close()

        self.addCleanup(close)
        return s

    def test_a_first_attempt_is_sent_again_under_a_new_session(self):
        def answer(request, n):
            return expired() if n == 1 else pb.Response(incr=pb.IncrResponse(value=1))

        s = self.session(answer)
        old = s.client_id
        value = self.successResultOf(defer.ensureDeferred(s.incr(b"n")))
        self.assertEqual(value, 1)
        first, second = s.connections[0].sent
        self.assertEqual(first.client_id, old)
        self.assertNotEqual(second.client_id, old)
        self.assertEqual(s.client_id, second.client_id)
        self.assertEqual((second.seq, second.ack_floor), (1, 1))

    def test_a_retried_write_raises(self):
        calls = []

        def answer(request, n):
            calls.append(request)
            if len(calls) == 1:
                response = pb.Response()
                errors.Unavailable("no quorum").to_pb(response.error)
                return response
            return expired()

        s = self.session(answer, addresses=("127.0.0.1:1", "127.0.0.1:2"))
        d = defer.ensureDeferred(s.put(b"k", b"v"))
        failure = self.failureResultOf(d, errors.SessionExpired)
        self.assertIn("expired", failure.getErrorMessage())
        self.assertEqual(len(calls), 2)
        self.assertEqual(calls[0].client_id, calls[1].client_id)
        self.assertEqual(calls[0].seq, calls[1].seq)

    def test_the_connection_level_write_is_renewed_too(self):
        sent = []
        api = txaio.tx.with_config()

        def write(data):
            sent.append(pb.Request.FromString(data[4:]))

        core = ClientCore(api, write)
        old = core.client_id
        d = core.call_write(build_request("put", b"k", b"v"))
        r = expired()
        r.id = sent[0].id
        core.data_received(frame(r))
        self.assertEqual(len(sent), 2)
        self.assertNotEqual(sent[1].client_id, old)
        ok = pb.Response(id=sent[1].id, put=pb.PutResponse(revision=3))
        core.data_received(frame(ok))
        self.assertEqual(self.successResultOf(d).put.revision, 3)
        # A second SESSION_EXPIRED for the same write is the caller's.
        d = core.call_write(build_request("put", b"k", b"v"))
        for _ in range(2):
            r = expired()
            r.id = sent[-1].id
            core.data_received(frame(r))
        self.failureResultOf(d, errors.SessionExpired)


# -- the CLI's txn parser ----------------------------------------------------


class TxnParserTests(SynchronousTestCase):
    def test_compares(self):
        self.assertEqual(parse_compare('mod("k") = "5"'), Compare.mod(b"k") == 5)
        self.assertEqual(parse_compare('value("k") != "x y"'), Compare.value(b"k") != b"x y")
        self.assertEqual(parse_compare('version("k") > "0"'), Compare.version(b"k") > 0)
        self.assertEqual(parse_compare('create("k") = "0"'), Compare.create(b"k") == 0)
        self.assertEqual(parse_compare('m(k) < 3'), Compare.mod(b"k") < 3)

    def test_ops(self):
        self.assertEqual(parse_op('put k "a value"'), Op.put(b"k", b"a value"))
        self.assertEqual(parse_op("del k"), Op.delete(b"k"))
        self.assertEqual(parse_op("del k --prefix"), Op.delete(prefix=b"k"))
        self.assertEqual(parse_op("del a z"), Op.delete(b"a", b"z"))
        self.assertEqual(parse_op("get k"), Op.get(b"k"))
        self.assertEqual(parse_op("incr n -2"), Op.incr(b"n", -2))

    def test_the_three_parts(self):
        text = 'mod("k") = "5"\nvalue("j") = "x"\n\nput k v\nincr n\n\nget k\n'
        compares, success, failure = parse_txn(text.splitlines())
        self.assertEqual((len(compares), len(success), len(failure)), (2, 2, 1))
        # An empty part is one blank line; missing parts are empty.
        compares, success, failure = parse_txn("\nput k v\n".splitlines())
        self.assertEqual((len(compares), len(success), len(failure)), (0, 1, 0))

    def test_malformed_input_names_the_line(self):
        for text, fragment in [
            ('mood("k") = "5"', "line 1: unknown compare target"),
            ('mod("k") = "five"', "line 1: mod compares with a number"),
            ('mod("k") ~ "5"', "line 1: not a compare"),
            ('mod("k") = "5"\n\nfrobnicate k', "line 3: unknown op"),
            ('mod("k") = "5"\n\nput k', "line 3: usage: put"),
            ('\n\n\nput k v', "line 4: more than three parts"),
            ('value("k) = "x"', "line 1: cannot parse"),
        ]:
            e = self.assertRaises(UsageError, parse_txn, text.splitlines())
            self.assertIn(fragment, str(e))

    def test_malformed_input_sends_nothing(self):
        class Client:
            def txn(self):
                raise AssertionError("nothing may be sent")

        self.assertRaises(UsageError, run_command, Client(), ["txn"], io.StringIO(),
                          stdin=io.StringIO('mod("k") = "x"\n'))

    def test_results_print_like_etcdctl(self):
        from geocachedb.client.results import KeyValue, PutResult, RangeResult, TxnResult

        class Client:
            def txn(self):
                return Txn(lambda request, timeout: TxnResult(True, [
                    PutResult(4, None), RangeResult([KeyValue(b"k", b"v")], False, 1, 4), 7], 4))

        out = io.StringIO()
        run_command(Client(), ["txn"], out, stdin=io.StringIO('mod("k") > "0"\n\nput k v\nget k\nincr n\n\n'))
        self.assertEqual(out.getvalue(), "SUCCESS\n\nOK\n\nk\nv\n\n7\n")
