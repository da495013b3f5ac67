"""`twistd geocache` options and the service tree, without a reactor."""

import os

from twisted.application.service import IServiceCollection
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from geocachedb import tap
from geocachedb.node.listener import ListeningService
from geocachedb.node.node import Node


class PeersOptionTests(SynchronousTestCase):
    def test_equals_form(self):
        self.assertEqual(
            tap.parse_peers("node2=127.0.0.1:50052, node3=127.0.0.1:50053"),
            {"node2": "127.0.0.1:50052", "node3": "127.0.0.1:50053"},
        )

    def test_go_seed_colon_form(self):
        self.assertEqual(
            tap.parse_peers("node2:localhost:50052,node3:localhost:50053"),
            {"node2": "localhost:50052", "node3": "localhost:50053"},
        )

    def test_empty_means_single_node(self):
        self.assertEqual(tap.parse_peers(""), {})

    def test_bad_peers_are_usage_errors(self):
        for bad in ("node2", "node2=127.0.0.1", "node2=:5", "a=h:1,a=h:2", "=h:1", "node2=::1:5", "node2=h:0"):
            self.assertRaises(usage.UsageError, tap.parse_peers, bad)

    def test_ipv6_peers_keep_their_brackets(self):
        self.assertEqual(tap.parse_peers("node2=[::1]:50052"), {"node2": "[::1]:50052"})


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self):
        o = self.parse("--id", "n1")
        self.assertEqual(o["listen"], "tcp:50051")
        self.assertEqual(o["storage"], "lmdb")
        self.assertEqual(o["data"], os.path.join("data", "n1"))
        self.assertEqual(o["admin"], "tcp:6051:interface=127.0.0.1")
        self.assertEqual(o["max-frame"], 4 * 1024 * 1024)
        self.assertEqual(o["peers"], {})

    def test_rejects_unknown_storage(self):
        self.assertRaises(usage.UsageError, self.parse, "--storage", "nope")

    def test_rejects_self_in_peers(self):
        self.assertRaises(usage.UsageError, self.parse, "--id", "a", "--peers", "a=h:1")

    def test_rejects_non_numbers(self):
        self.assertRaises(usage.UsageError, self.parse, "--max-frame", "big")
        self.assertRaises(usage.UsageError, self.parse, "--election-timeout", "0")

    def test_timeouts_become_ticks(self):
        o = self.parse("--heartbeat-interval", "50", "--election-timeout", "500")
        config = tap.build_node_config(o)
        self.assertEqual(config.tick_seconds, 0.05)
        self.assertEqual(config.election_ticks, 10)

    def test_advertise_and_join_must_be_host_port(self):
        for option in ("--advertise", "--join"):
            for bad in ("127.0.0.1", "h:port", "::1:5"):
                self.assertRaises(usage.UsageError, self.parse, option, bad)
        self.assertEqual(self.parse("--advertise", "[::1]:7001")["advertise"], "[::1]:7001")
        self.assertEqual(self.parse("--join", "127.0.0.1:7001")["join"], "127.0.0.1:7001")

    def test_advertised_address_comes_from_the_listen_port(self):
        o = self.parse("--listen", "tcp:7001:interface=127.0.0.1")
        self.assertEqual(tap.advertised_address(o), "127.0.0.1:7001")


class MakeServiceTests(SynchronousTestCase):
    def test_builds_node_listener_and_admin(self):
        data = self.mktemp()
        options = tap.Options()
        options.parseOptions(["--id", "n1", "--data", data, "--peers", "n2=127.0.0.1:1"])
        top = tap.makeService(options, reactor=MemoryReactorClock())
        self.assertTrue(IServiceCollection.providedBy(top))
        children = list(top)
        self.assertIsInstance(children[0], Node)
        listeners = [c for c in children if isinstance(c, ListeningService)]
        self.assertEqual([l.description for l in listeners], ["tcp:50051", "tcp:6051:interface=127.0.0.1"])
        self.assertTrue(os.path.isdir(data))
        # The interpreter is tuned last, after everything else has started.
        self.assertEqual(children[-1].name, "interpreter-tuning")

    def test_unwritable_data_dir_is_one_clear_line(self):
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a directory")
        options = tap.Options()
        options.parseOptions(["--data", os.path.join(blocker, "sub"), "--admin", "none"])
        e = self.assertRaises(SystemExit, tap.makeService, options, MemoryReactorClock())
        self.assertIn("cannot use data directory", str(e))
        self.assertIn(blocker, str(e))
