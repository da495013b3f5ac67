"""geocache-bench as a user runs it: a tiny load against a real single node,
the JSON it promises, its exit codes, and compare-etcd's answer when there
is no etcd to compare with.  The speed figures themselves are benchmark
runs (docs/PERFORMANCE.md), not tests."""

import json
import os
import socket
import subprocess
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from twisted.trial.unittest import SynchronousTestCase

from geocachedb.bench import etcd_wire
from geocachedb.bench.cli import PERCENTILES
from geocachedb.bench.compare import format_level
from geocachedb.bench.etcd_cluster import EtcdCluster, find_etcd
from geocachedb.bench.load import make_key
from geocachedb.harness.processes import NodeProcess, free_port

BENCH = [sys.executable, "-m", "geocachedb.bench.cli"]


def bench(*args, env=None, timeout=60):
    return subprocess.run(BENCH + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def start_node(test):
    base = os.path.abspath(test.mktemp())
    os.makedirs(base)
    node = NodeProcess("node1", free_port(), os.path.join(base, "node1"), os.path.join(base, "node1.log"),
                       extra=("--admin", "none"))
    test.addCleanup(node.stop)
    node.start().wait_listening()
    return node


class BenchAgainstARealNodeTests(SynchronousTestCase):
    def setUp(self):
        self.node = start_node(self)

    def run_json(self, *args):
        result = bench("--endpoints", self.node.address, "--json", *args)
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)

    def assertSaneSummary(self, s, ops):
        for field in ("ops", "seconds", "ops_per_sec", "latency_ms", "errors", "errors_total",
                      "client_cpu_percent", "puts", "gets", "config"):
            self.assertIn(field, s)
        self.assertEqual(s["ops"], ops)
        self.assertEqual(s["errors"], {})
        self.assertEqual(s["errors_total"], 0)
        self.assertGreater(s["seconds"], 0)
        self.assertGreater(s["ops_per_sec"], 0)
        lat = s["latency_ms"]
        order = [name for name, _ in PERCENTILES] + ["max"]
        self.assertEqual(order, ["p50", "p90", "p99", "p99.9", "max"])
        values = [lat[name] for name in order]
        self.assertGreater(values[0], 0)
        self.assertEqual(values, sorted(values), lat)
        self.assertLess(values[-1], 30000)
        self.assertGreaterEqual(s["client_cpu_percent"], 0)
        self.assertLessEqual(s["client_cpu_percent"], 100 * (os.cpu_count() or 1) + 1)

    def test_put_load_reports_ops_latency_percentiles_errors_and_client_cpu(self):
        s = self.run_json("--ops", 200, "--concurrency", 8)
        self.assertSaneSummary(s, 200)
        self.assertEqual((s["puts"], s["gets"]), (200, 0))
        self.assertEqual(s["config"]["concurrency"], 8)
        self.assertEqual(s["config"]["protocol"], "geocache")
        self.assertEqual(s["config"]["value_size"], 100)

    def test_txn_writes_are_compare_and_put_txns(self):
        s = self.run_json("--ops", 100, "--concurrency", 4, "--write-op", "txn", "--keyspace", 10,
                          "--key-size", 8)
        self.assertSaneSummary(s, 100)
        with self.node.client() as c:
            kvs = c.range_kvs(prefix=b"0").kvs
        self.assertTrue(kvs)
        # Every txn wrote: 100 revisions of the 10 keys.
        self.assertEqual(sum(kv.version for kv in kvs), 100)

    def test_read_ratio_one_runs_only_gets(self):
        s = self.run_json("--ops", 200, "--read-ratio", 1, "--concurrency", 4)
        self.assertSaneSummary(s, 200)
        self.assertEqual((s["puts"], s["gets"]), (0, 200))
        s = self.run_json("--ops", 100, "--read-ratio", 1, "--consistency", "serializable", "--procs", 2)
        self.assertSaneSummary(s, 100)
        self.assertEqual(s["gets"], 100)

    def test_sequential_key_order_writes_every_key_of_the_keyspace(self):
        self.run_json("--ops", 50, "--keyspace", 50, "--key-order", "sequential", "--key-size", 8)
        with self.node.client() as c:
            for i in range(50):
                self.assertIsNotNone(c.get(make_key(i, 8)), i)

    def test_table_on_stdout_without_json(self):
        result = bench("--endpoints", self.node.address, "--ops", 50)
        self.assertEqual(result.returncode, 0, result.stderr)
        for label in ("operations", "ops/s", "latency ms p50/p90", "latency ms p99/p99.9", "errors", "client CPU"):
            self.assertIn(label, result.stdout)


class BenchErrorTests(SynchronousTestCase):
    def test_refused_endpoint_is_a_clear_error_with_exit_code_2(self):
        port = free_port()  # nothing listens there
        result = bench("--endpoints", "127.0.0.1:%d" % port, "--ops", 10)
        self.assertEqual(result.returncode, 2)
        self.assertIn("cannot connect to 127.0.0.1:%d: connection refused" % port, result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_malformed_endpoint_is_a_usage_error(self):
        result = bench("--endpoints", "no-port-here", "--ops", 10)
        self.assertEqual(result.returncode, 2)
        self.assertIn("is not HOST:PORT", result.stderr)

    def test_a_server_that_never_answers_ends_the_run_as_stalled(self):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections (backlog), never answers
        result = bench("--endpoints", "127.0.0.1:%d" % listener.getsockname()[1], "--ops", 10,
                       "--concurrency", 3, "--stall-timeout", 0.5, "--json", timeout=30)
        self.assertEqual(result.returncode, 1, result.stderr)
        s = json.loads(result.stdout)
        self.assertEqual(s["ops"], 0)
        self.assertEqual(s["errors"], {"STALLED": 3})
        self.assertEqual(s["latency_ms"]["p50"], None)


class CompareEtcdWithoutEtcdTests(SynchronousTestCase):
    def test_missing_etcd_says_how_to_get_it_and_exits_2(self):
        empty = os.path.abspath(self.mktemp())
        os.makedirs(empty)
        env = dict(os.environ, PATH=empty)
        result = bench("compare-etcd", "--duration", 1, env=env)
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertIn("etcd", result.stderr)
        self.assertIn("apt-get install etcd-server", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_etcd_flag_naming_a_missing_binary_exits_2(self):
        result = bench("compare-etcd", "--etcd", os.path.abspath("no-such-etcd"))
        self.assertEqual(result.returncode, 2)
        self.assertIn("apt-get install etcd-server", result.stderr)

    def test_bad_levels_are_a_usage_error(self):
        result = bench("compare-etcd", "--concurrency", "1,x")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--concurrency", result.stderr)


def _etcd_messages():
    """PutRequest, RangeRequest and StatusResponse built by the protobuf
    runtime from the field numbers of etcd's rpc.proto."""
    T = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="etcd_subset_for_test.proto", package="etcdtest", syntax="proto3")

    def message(name, *fields):
        m = f.message_type.add(name=name)
        for fname, number, ftype, type_name in fields:
            field = m.field.add(name=fname, number=number, type=ftype, label=T.LABEL_OPTIONAL)
            if type_name:
                field.type_name = type_name

    message("PutRequest", ("key", 1, T.TYPE_BYTES, None), ("value", 2, T.TYPE_BYTES, None),
            ("lease", 3, T.TYPE_INT64, None))
    message("RangeRequest", ("key", 1, T.TYPE_BYTES, None), ("range_end", 2, T.TYPE_BYTES, None),
            ("limit", 3, T.TYPE_INT64, None), ("serializable", 7, T.TYPE_BOOL, None))
    message("ResponseHeader", ("cluster_id", 1, T.TYPE_UINT64, None), ("member_id", 2, T.TYPE_UINT64, None),
            ("revision", 3, T.TYPE_INT64, None), ("raft_term", 4, T.TYPE_UINT64, None))
    message("StatusResponse", ("header", 1, T.TYPE_MESSAGE, ".etcdtest.ResponseHeader"),
            ("version", 2, T.TYPE_STRING, None), ("dbSize", 3, T.TYPE_INT64, None),
            ("leader", 4, T.TYPE_UINT64, None), ("raftIndex", 5, T.TYPE_UINT64, None),
            ("raftTerm", 6, T.TYPE_UINT64, None))
    message("Compare", ("result", 1, T.TYPE_INT32, None), ("target", 2, T.TYPE_INT32, None),
            ("key", 3, T.TYPE_BYTES, None), ("version", 4, T.TYPE_INT64, None))
    message("RequestOp", ("request_put", 2, T.TYPE_MESSAGE, ".etcdtest.PutRequest"))
    m = f.message_type.add(name="TxnRequest")
    m.field.add(name="compare", number=1, type=T.TYPE_MESSAGE, label=T.LABEL_REPEATED,
                type_name=".etcdtest.Compare")
    m.field.add(name="success", number=2, type=T.TYPE_MESSAGE, label=T.LABEL_REPEATED,
                type_name=".etcdtest.RequestOp")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName("etcdtest." + name))
            for name in ("PutRequest", "RangeRequest", "StatusResponse", "TxnRequest")}


def _have_grpc():
    try:
        import grpc  # noqa: F401
    except ImportError:
        return False
    return True


class BenchAgainstARealEtcdTests(SynchronousTestCase):
    """Only where an etcd binary and grpcio are installed (apt-get install
    etcd-server; pip install 'geocachedb[bench]')."""

    if not find_etcd():
        skip = "no etcd binary on PATH (apt-get install etcd-server)"
    elif not _have_grpc():
        skip = "grpcio is not installed (pip install 'geocachedb[bench]')"

    def test_etcd_protocol_puts_and_linearizable_gets_against_one_member(self):
        base = os.path.abspath(self.mktemp())
        cluster = EtcdCluster(base, 1, find_etcd())
        self.addCleanup(cluster.stop_all)
        cluster.start(timeout=20)
        address = cluster["etcd1"].address
        result = bench("--protocol", "etcd", "--endpoints", address, "--ops", 200, "--concurrency", 8, "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        s = json.loads(result.stdout)
        self.assertEqual((s["ops"], s["puts"], s["errors"]), (200, 200, {}))
        self.assertEqual(s["config"]["protocol"], "etcd")
        result = bench("--protocol", "etcd", "--endpoints", address, "--ops", 100, "--read-ratio", 1, "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout)["gets"], 100)
        self.assertGreater(cluster["etcd1"].status()["raft_index"], 200)


class EtcdWireTests(SynchronousTestCase):
    def setUp(self):
        self.pb = _etcd_messages()

    def test_put_request_matches_the_protobuf_runtime(self):
        for key, value in [(b"k" * 16, b"v" * 100), (b"x", b""), (b"k" * 300, b"\x00" * 70000)]:
            expected = self.pb["PutRequest"](key=key, value=value).SerializeToString()
            self.assertEqual(etcd_wire.put_request(key, value), expected)

    def test_txn_request_matches_the_protobuf_runtime(self):
        txn = self.pb["TxnRequest"]()
        txn.compare.add(result=2, target=0, key=b"k" * 16, version=1 << 40)  # LESS, VERSION
        txn.success.add().request_put.CopyFrom(self.pb["PutRequest"](key=b"k" * 16, value=b"v" * 100))
        self.assertEqual(etcd_wire.txn_request(b"k" * 16, b"v" * 100), txn.SerializeToString())

    def test_range_request_matches_the_protobuf_runtime(self):
        for serializable in (False, True):
            expected = self.pb["RangeRequest"](key=b"k" * 16, serializable=serializable).SerializeToString()
            self.assertEqual(etcd_wire.range_request(b"k" * 16, serializable), expected)

    def test_status_response_names_member_and_leader(self):
        big = 0xAAF4E5F599F3EBE7
        msg = self.pb["StatusResponse"](version="3.4.23", dbSize=20480, leader=big, raftIndex=9, raftTerm=2)
        msg.header.member_id = big
        msg.header.cluster_id = 7
        status = etcd_wire.parse_status(msg.SerializeToString())
        self.assertEqual(status["member_id"], big)
        self.assertEqual(status["leader"], big)
        self.assertEqual(status["version"], "3.4.23")
        self.assertEqual((status["raft_term"], status["raft_index"], status["db_size"]), (2, 9, 20480))

    def test_truncated_status_is_rejected(self):
        data = self.pb["StatusResponse"](version="3.4.23").SerializeToString()
        self.assertRaises(ValueError, etcd_wire.parse_status, data[:-1])


class CompareTableTests(SynchronousTestCase):
    def result(self, label, ops_per_sec, us, p99):
        return {"label": label, "ops_per_sec": ops_per_sec, "gets": 0, "errors": {},
                "latency_ms": {"p50": 1.0, "p99": p99, "p99.9": p99 * 2},
                "server_cpu_us_per_op": us, "leader": "a", "leader_after": "a", "nodes": ["a", "b", "c"],
                "server_cpu_us_per_op_by_node": {"a": us / 2, "b": us / 4, "c": us / 4},
                "client_cpu_percent": 10.0, "server_rss_mb": {"a": 30.0, "b": 20.0, "c": 20.0}}

    def test_level_table_shows_both_systems_the_ratio_and_the_per_node_split(self):
        text = format_level(self.result("etcd 3.4.23", 5000.0, 200.0, 30.0),
                            self.result("geocachedb 0.1.0", 4000.0, 100.0, 15.0))
        self.assertIn("etcd 3.4.23", text)
        self.assertIn("geocachedb 0.1.0", text)
        puts = [line for line in text.splitlines() if line.strip().startswith("puts/s")][0]
        self.assertEqual(puts.split()[1:], ["5,000", "4,000", "0.80"])
        cpu = [line for line in text.splitlines() if "server CPU" in line][0]
        self.assertTrue(cpu.rstrip().endswith("0.50"), cpu)
        self.assertIn("L 100 / F 50 / F 50", text)


class ProfileSummaryTests(SynchronousTestCase):
    RAW = [
        "<module> (twistd:6);run (twisted/internet/base.py:686);Replica._apply (geocachedb/server/replica.py:10);"
        "LMDBStorage._write (geocachedb/storage/lmdb.py:58) 6\n",
        "<module> (twistd:6);run (twisted/internet/base.py:686);WriteAheadLog._fdatasync (geocachedb/wal/log.py:472) 3\n",
        "<module> (twistd:6);run (twisted/internet/base.py:690) 1\n",
        "\n",
    ]

    def test_raw_samples_add_up_per_function_without_line_numbers(self):
        from geocachedb.bench.profile import summarize_raw

        total, own, inclusive = summarize_raw(self.RAW)
        self.assertEqual(total, 10)
        self.assertEqual(own["LMDBStorage._write (geocachedb/storage/lmdb.py)"], 6)
        self.assertEqual(own["run (twisted/internet/base.py)"], 1)
        self.assertEqual(inclusive["run (twisted/internet/base.py)"], 10)
        self.assertEqual(inclusive["<module> (twistd)"], 10)

    def test_samples_are_charged_to_the_first_matching_stage(self):
        from geocachedb.bench.profile import by_stage

        stages = by_stage(self.RAW)
        self.assertEqual(stages["apply: state machine + LMDB transaction"], 6)
        self.assertEqual(stages["Raft log: WAL append + fdatasync"], 3)
        self.assertEqual(stages["Twisted reactor and socket I/O"], 1)
