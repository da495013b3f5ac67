"""The admin shell over a real loopback socket, against a fake node.

Each test listens on ``tcp:0:interface=127.0.0.1`` in the test's reactor and
talks to the shell the way ``nc`` does: raw bytes, no negotiation.  Timers
(login delay, idle and command timeouts) run on a `task.Clock`, so no test
waits for real time beyond the socket round trips.
"""

import random

from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.protocol import Protocol
from twisted.logger import globalLogPublisher, formatEvent
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from geocachedb import errors
from geocachedb.admin import make_admin_factory, telnet
from geocachedb.client import KeyValue
from geocachedb.interfaces import INodeControl

PASSWORD = "correct horse battery"
IAC_WILL_ECHO = bytes((telnet.IAC, telnet.WILL, telnet.ECHO))
IAC_WONT_ECHO = bytes((telnet.IAC, telnet.WONT, telnet.ECHO))
PROMPT = b"node1(leader)> "


@implementer(INodeControl)
class FakeNode:
    """An in-memory INodeControl.  ``hold`` names methods whose Deferreds
    the test fires by hand (from ``pending``); ``fail`` maps a method to the
    exception it fails with."""

    node_id = "node1"

    def __init__(self, fault_injection_enabled=False):
        self.fault_injection_enabled = fault_injection_enabled
        self.data = {}
        self.index = 41
        self.role = "leader"
        self.log_level = "info"
        self.isolated = set()
        self.calls = []
        self.hold = set()
        self.fail = {}
        self.pending = []

    def status(self):
        return {
            "id": "node1",
            "role": self.role,
            "term": 7,
            "leader": "node1",
            "commit_index": self.index,
            "applied_index": self.index,
            "log_first_index": 12,
            "log_last_index": self.index,
            "snapshot_index": 11,
            "revision": 90,
            "compact_revision": 70,
            "storage": "lmdb",
            "storage_bytes": 3 * 1024 * 1024,
            "uptime": 3725.0,
            "peers": [
                {"id": "node2", "address": "127.0.0.1:50052", "connected": True,
                 "match_index": self.index, "last_contact": 0.25},
                {"id": "node3", "address": "127.0.0.1:50053", "connected": False,
                 "match_index": 30, "last_contact": None},
            ],
        }

    def members(self):
        return [
            {"id": "node1", "address": "127.0.0.1:50051", "role": "voter", "is_leader": True, "is_self": True},
            {"id": "node2", "address": "127.0.0.1:50052", "role": "voter", "is_leader": False, "is_self": False},
            {"id": "node4", "address": "127.0.0.1:50054", "role": "learner", "is_leader": False, "is_self": False},
        ]

    def stats(self):
        return {
            "requests": {"get": 120, "put": 80},
            "errors": {"NOT_LEADER": 2},
            "latency_ms": {"p50": 1.25, "p90": 3.5, "p99": 9.75, "max": 20.0},
            "batch_sizes": {"mean": 3.5, "max": 64},
            "fsyncs": 1234,
        }

    def _answer(self, name, compute):
        self.calls.append(name)
        if name in self.fail:
            return defer.fail(self.fail[name])
        if name in self.hold:
            d = defer.Deferred()
            self.pending.append((name, d, compute))
            return d
        return defer.succeed(compute())

    def release(self):
        """Fire the oldest held Deferred with its real answer."""
        name, d, compute = self.pending.pop(0)
        d.callback(compute())

    def get(self, key):
        return self._answer("get", lambda: self.data.get(key))

    def get_kv(self, key, revision=0):
        def read():
            if revision < 70:
                raise errors.Compacted("revision %d has been compacted; the compact revision is 70" % revision)
            value = self.data.get(key)
            return None if value is None else KeyValue(key, value, 3, 9, 2)

        return self._answer("get_kv", read)

    def compact_history(self, revision):
        return self._answer("compact_history", lambda: None)

    def put(self, key, value):
        def apply():
            self.data[key] = value
            self.index += 1
            return self.index

        return self._answer("put", apply)

    def delete(self, key):
        return self._answer("delete", lambda: self.data.pop(key, None) is not None)

    def scan(self, prefix, limit):
        return self._answer(
            "scan",
            lambda: sorted((k, v) for k, v in self.data.items() if k.startswith(prefix))[:limit],
        )

    def set_log_level(self, level):
        self.log_level = level

    def isolate(self, peer_ids):
        if not self.fault_injection_enabled:
            raise RuntimeError("fault injection is not enabled")
        for p in peer_ids:
            if p not in ("node2", "node3"):
                raise KeyError(p)
        self.isolated.update(peer_ids)

    def heal(self):
        self.isolated.clear()

    def _membership(self, what, node_id, **extra):
        self.calls.append((what, node_id, extra))
        if what in self.fail:
            return defer.fail(self.fail[what])
        return defer.succeed(self.members())

    def add_member(self, node_id, address, learner=False):
        return self._membership("add_member", node_id, address=address, learner=learner)

    def promote(self, node_id):
        return self._membership("promote", node_id)

    def remove_member(self, node_id):
        return self._membership("remove_member", node_id)

    def transfer_leader(self, node_id):
        return self._membership("transfer_leader", node_id)

    def snapshot(self):
        return 30

    def compact(self):
        return None


class LineClient(Protocol):
    """A raw-socket client (like ``nc``) that can wait for output."""

    def __init__(self):
        self.received = b""
        self._seen = 0  # what `expect` has consumed
        self._waiting = None
        self.lost = defer.Deferred()
        self.connected_ = False

    def connectionMade(self):
        self.connected_ = True

    def dataReceived(self, data):
        self.received += data
        self._check()

    def connectionLost(self, reason):
        self.connected_ = False
        if self._waiting is not None:
            needle, d, _ = self._waiting
            self._waiting = None
            d.errback(AssertionError(
                "connection closed while waiting for %r; got %r" % (needle, self.received[self._seen:])
            ))
        self.lost.callback(None)

    def send(self, data):
        self.transport.write(data)

    def expect(self, needle, timeout=5):
        """Fire with everything up to and including ``needle`` (consumed)."""
        d = defer.Deferred()
        self._waiting = (needle, d, None)
        d.addTimeout(timeout, reactor, onTimeoutCancel=lambda r, t: self._timeout(needle))
        self._check()
        return d

    def _timeout(self, needle):
        self._waiting = None
        raise AssertionError("no %r within the timeout; got %r" % (needle, self.received[self._seen:]))

    def _check(self):
        if self._waiting is None:
            return
        needle, d, _ = self._waiting
        at = self.received.find(needle, self._seen)
        if at >= 0:
            self._waiting = None
            chunk = self.received[self._seen : at + len(needle)]
            self._seen = at + len(needle)
            d.callback(chunk)

    def rest(self):
        return self.received[self._seen:]

    def closed(self, timeout=5):
        d = defer.Deferred()
        self.lost.addCallback(lambda _: d.callback(self.received[self._seen:]) if not d.called else None)
        return d.addTimeout(timeout, reactor)


class ShellHarness:
    """Mixin for trial TestCases: a listening admin shell and clients."""

    def start(self, node=None, **options):
        self.node = node if node is not None else FakeNode()
        self.clock = task.Clock()
        options.setdefault("reactor", self.clock)
        self.factory = make_admin_factory(self.node, PASSWORD, **options)
        self._server_lost = []
        build = self.factory.buildProtocol

        def tracked(addr):
            protocol = build(addr)
            lost = defer.Deferred()
            self._server_lost.append(lost)
            original = protocol.connectionLost

            def connectionLost(reason):
                try:
                    original(reason)
                finally:
                    lost.callback(None)

            protocol.connectionLost = connectionLost
            return protocol

        self.factory.buildProtocol = tracked
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clients = []
        self.addCleanup(self._close_all)
        endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        d = endpoint.listen(self.factory)

        def listening(port):
            self.port = port
            self.addCleanup(port.stopListening)

        return d.addCallback(listening)

    @defer.inlineCallbacks
    def _close_all(self):
        for c in self.clients:
            if c.connected_:
                c.transport.loseConnection()
        yield defer.DeferredList([c.lost for c in self.clients])
        yield defer.DeferredList(self._server_lost)

    def connect(self):
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        client = LineClient()
        self.clients.append(client)
        return endpoints.connectProtocol(endpoint, client)

    @defer.inlineCallbacks
    def login(self):
        client = yield self.connect()
        yield client.expect(b"Password: ")
        client.send(PASSWORD.encode() + b"\r\n")
        yield client.expect(PROMPT)
        return client

    @defer.inlineCallbacks
    def command(self, client, line):
        """Send one command line; fire with its output (text, without the
        next prompt)."""
        client.send(line + b"\n")
        out = yield client.expect(PROMPT)
        return out[: -len(PROMPT)].decode("utf-8")

    @defer.inlineCallbacks
    def wait_until(self, predicate, timeout=5):
        """Poll ``predicate`` until true: for effects on the server side of
        the socket, which the client cannot observe directly."""
        for _ in range(int(timeout / 0.01)):
            if predicate():
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("condition not reached within %ss" % timeout)

    def log_text(self):
        return "\n".join(formatEvent(e) or "" for e in self.events)


class LoginTests(ShellHarness, unittest.TestCase):
    timeout = 15

    def setUp(self):
        return self.start()

    def test_fake_node_provides_inodecontrol(self):
        self.assertTrue(verifyObject(INodeControl, self.node))

    @defer.inlineCallbacks
    def test_raw_client_gets_password_prompt_without_negotiating(self):
        client = yield self.connect()
        greeting = yield client.expect(b"Password: ")
        # The negotiation goes out with the prompt; nothing waits for a reply.
        self.assertTrue(greeting.startswith(IAC_WILL_ECHO))
        self.assertIn(b"geocachedb admin shell on node1\r\n", greeting)

    @defer.inlineCallbacks
    def test_right_password_gives_prompt_with_id_and_role(self):
        client = yield self.connect()
        yield client.expect(b"Password: ")
        client.send(PASSWORD.encode() + b"\n")
        out = yield client.expect(PROMPT)
        self.assertIn(IAC_WONT_ECHO, out)
        self.assertIn(b"logged in to node1", out)
        self.node.role = "follower"
        client.send(b"\n")
        yield client.expect(b"node1(follower)> ")

    @defer.inlineCallbacks
    def test_line_endings_crlf_lf_and_cr_nul_all_work(self):
        client = yield self.connect()
        yield client.expect(b"Password: ")
        client.send(PASSWORD.encode() + b"\r\x00")
        yield client.expect(PROMPT)
        client.send(b"get a\r\n")
        out = yield client.expect(PROMPT)
        self.assertIn(b"(not found)\r\n", out)
        client.send(b"get b\n")
        out = yield client.expect(PROMPT)
        self.assertIn(b"(not found)\r\n", out)
        self.assertEqual(self.node.calls, ["get", "get"])

    @defer.inlineCallbacks
    def test_output_lines_end_in_crlf_never_cr_cr_lf(self):
        client = yield self.login()
        yield self.command(client, b"status")
        yield self.command(client, b"help")
        self.assertNotIn(b"\r\r\n", client.received)
        self.assertEqual(client.received.count(b"\n"), client.received.count(b"\r\n"))

    @defer.inlineCallbacks
    def test_three_wrong_passwords_close_the_connection(self):
        client = yield self.connect()
        yield client.expect(b"Password: ")
        for attempt in (1, 2):
            client.send(b"wrong%d\n" % attempt)
            yield client.expect(b"\r\n")  # the Enter the client did not echo
            # A pause before the next attempt, on the injected clock.
            self.assertNotIn(b"try again", client.rest())
            self.clock.advance(1.0)
            yield client.expect(b"error: wrong password, try again\r\nPassword: ")
        client.send(b"wrong3\n")
        rest = yield client.closed()
        self.assertIn(b"3 failed attempts", rest)
        text = self.log_text()
        self.assertIn("failed (attempt 3 of 3)", text)
        self.assertNotIn("wrong3", text)

    @defer.inlineCallbacks
    def test_lines_typed_during_the_pause_are_the_next_attempts(self):
        client = yield self.connect()
        yield client.expect(b"Password: ")
        client.send(b"nope\n" + PASSWORD.encode() + b"\n")
        yield client.expect(b"\r\n")
        self.assertNotIn(PROMPT, client.rest())
        self.clock.advance(1.0)
        yield client.expect(PROMPT)

    @defer.inlineCallbacks
    def test_password_never_appears_in_the_log(self):
        client = yield self.connect()
        yield client.expect(b"Password: ")
        client.send(PASSWORD.encode() + b"x\n")  # a near miss
        yield client.expect(b"\r\n")
        self.clock.advance(1.0)
        yield client.expect(b"Password: ")
        client.send(PASSWORD.encode() + b"\n")
        yield client.expect(PROMPT)
        # Typed again at the prompt by mistake: still not logged.
        out = yield self.command(client, PASSWORD.encode())
        self.assertIn("unknown command", out)
        yield self.command(client, b"status")
        text = self.log_text()
        self.assertIn("admin login from 127.0.0.1:", text)
        self.assertIn(": status", text)
        self.assertNotIn("correct horse", text)
        for event in self.events:
            self.assertNotIn("correct horse", repr(event))

    @defer.inlineCallbacks
    def test_login_timeout_closes_an_unauthenticated_connection(self):
        client = yield self.connect()
        yield client.expect(b"Password: ")
        self.clock.advance(61)
        rest = yield client.closed()
        self.assertIn(b"no password within 60s", rest)

    @defer.inlineCallbacks
    def test_ctrl_c_at_the_password_prompt_closes(self):
        client = yield self.connect()
        yield client.expect(b"Password: ")
        client.send(bytes((telnet.IAC, telnet.IP)))
        yield client.closed()


class CommandTests(ShellHarness, unittest.TestCase):
    timeout = 15

    @defer.inlineCallbacks
    def setUp(self):
        yield self.start()
        self.client = yield self.login()

    def cmd(self, line):
        return self.command(self.client, line)

    @defer.inlineCallbacks
    def test_help_lists_every_command_with_a_description(self):
        out = yield self.cmd(b"help")
        for name in ("help [CMD]", "status", "members", "get KEY", "put KEY VALUE", "delete KEY",
                     "scan [PREFIX [LIMIT]]", "stats", "loglevel LEVEL", "isolate PEER...", "heal", "quit"):
            self.assertIn("\r\n  " + name + " ", out)

    @defer.inlineCallbacks
    def test_help_command_shows_usage_and_detail(self):
        out = yield self.cmd(b"help put")
        self.assertIn("usage: put KEY VALUE", out)
        self.assertIn("x'00ff'", out)
        out = yield self.cmd(b"help nosuch")
        self.assertIn("error: unknown command nosuch", out)

    @defer.inlineCallbacks
    def test_get_at_a_revision_and_compacting_history(self):
        self.node.data[b"k"] = b"v"
        out = yield self.cmd(b"get k --rev 80")
        self.assertIn("v\r\n(created at revision 3, modified at 9, version 2)", out)
        out = yield self.cmd(b"get k --rev 5")
        self.assertIn("compact revision is 70", out)
        out = yield self.cmd(b"get k --rev x")
        self.assertIn("must be a positive revision number", out)
        out = yield self.cmd(b"compact 80")
        self.assertIn("reads below revision 80 now fail", out)
        self.assertIn("compact_history", self.node.calls)

    @defer.inlineCallbacks
    def test_status_shows_raft_state_storage_and_peer_table(self):
        out = yield self.cmd(b"status")
        for expected in ("node            node1", "role            leader", "term            7",
                         "commit index    41", "applied index   41", "log length      30 entries (12..41)",
                         "snapshot index  11", "storage         lmdb, 3.0 MiB", "uptime          1h 2m 5s",
                         "revision        90", "compact rev     70"):
            self.assertIn(expected + "\r\n", out)
        self.assertIn("PEER   ADDRESS          CONNECTED  MATCH  LAST CONTACT\r\n", out)
        self.assertIn("node2  127.0.0.1:50052  yes        41     250ms ago\r\n", out)
        self.assertIn("node3  127.0.0.1:50053  no         30     never\r\n", out)

    @defer.inlineCallbacks
    def test_members_table(self):
        out = yield self.cmd(b"members")
        self.assertIn("node1  127.0.0.1:50051  voter    leader, this node\r\n", out)
        self.assertIn("node4  127.0.0.1:50054  learner\r\n", out)
        self.assertIn("(3 members)", out)

    @defer.inlineCallbacks
    def test_put_get_delete_scan(self):
        out = yield self.cmd(b"put user:1 alice")
        self.assertEqual(out, "OK (applied at index 42)\r\n")
        yield self.cmd(b"put user:2 bob")
        yield self.cmd(b"put other x")
        out = yield self.cmd(b"get user:1")
        self.assertEqual(out, "alice\r\n")
        out = yield self.cmd(b"scan user:")
        self.assertEqual(out, "KEY     VALUE\r\nuser:1  alice\r\nuser:2  bob\r\n(2 keys)\r\n")
        out = yield self.cmd(b"scan user: 1")
        self.assertIn("(1 keys, the limit; there may be more: try scan user: 10)", out)
        out = yield self.cmd(b"scan")
        self.assertIn("(3 keys)", out)
        out = yield self.cmd(b"delete user:1")
        self.assertEqual(out, "deleted\r\n")
        out = yield self.cmd(b"delete user:1")
        self.assertEqual(out, "not found (nothing deleted)\r\n")
        out = yield self.cmd(b"get user:1")
        self.assertEqual(out, "(not found)\r\n")
        out = yield self.cmd(b"scan nothing")
        self.assertEqual(out, "(no keys start with nothing)\r\n")

    @defer.inlineCallbacks
    def test_quoted_and_hex_keys_and_values(self):
        yield self.cmd(b'put "a key" "two words"')
        yield self.cmd(b"put x'00ff' \"tab\\there\\x01\"")
        yield self.cmd(b"put 'single quoted' caf\xc3\xa9")
        self.assertEqual(self.node.data[b"a key"], b"two words")
        self.assertEqual(self.node.data[b"\x00\xff"], b"tab\there\x01")
        self.assertEqual(self.node.data[b"single quoted"], "café".encode())
        out = yield self.cmd(b'get "\\x00\\xff"')
        self.assertEqual(out, '"tab\\there\\x01"\r\n')
        out = yield self.cmd(b"get 'a key'")
        self.assertEqual(out, '"two words"\r\n')
        out = yield self.cmd(b"get 'single quoted'")
        self.assertEqual(out, "\"café\"\r\n")
        out = yield self.cmd(b"scan \"\" 10")
        self.assertIn('"\\x00\\xff"', out)

    @defer.inlineCallbacks
    def test_bad_arguments_say_how_to_do_it_right(self):
        out = yield self.cmd(b"put onlykey")
        self.assertEqual(out, "error: usage: put KEY VALUE (help put for details)\r\n")
        out = yield self.cmd(b"get")
        self.assertEqual(out, "error: usage: get KEY (help get for details)\r\n")
        out = yield self.cmd(b'put "unterminated value')
        self.assertIn("error: unterminated double quote", out)
        out = yield self.cmd(b"put k x'abc'")
        self.assertIn("error: bad hex literal x'abc': use an even number of hex digits", out)
        out = yield self.cmd(b"get \\q")
        self.assertIn("error: unknown escape \\q", out)
        out = yield self.cmd(b'get ""')
        self.assertIn("error: keys must not be empty", out)
        out = yield self.cmd(b"get " + b"k" * 600)
        self.assertIn("error: key is 600 bytes; the limit is 511", out)
        out = yield self.cmd(b"scan a 0")
        self.assertIn("error: LIMIT must be a whole number from 1 to 10000, not 0", out)
        out = yield self.cmd(b"statsu")
        self.assertEqual(out, "error: unknown command statsu: did you mean stats? type help for the list of commands\r\n")
        self.assertEqual(self.node.calls, [])

    @defer.inlineCallbacks
    def test_stats(self):
        out = yield self.cmd(b"stats")
        self.assertIn("requests      200\r\n  get         120\r\n  put         80\r\n", out)
        self.assertIn("errors        2\r\n  NOT_LEADER  2\r\n", out)
        self.assertIn("latency (ms)  p50 1.25  p90 3.50  p99 9.75  max 20.0\r\n", out)
        self.assertIn("batch size    mean 3.50  max 64\r\n", out)
        self.assertIn("fsyncs        1234\r\n", out)

    @defer.inlineCallbacks
    def test_membership_commands(self):
        out = yield self.cmd(b"add-member node4 127.0.0.1:50054")
        self.assertIn("members: node1*, node2, node4 (learner)", out)
        self.assertEqual(self.node.calls[-1], ("add_member", "node4", {"address": "127.0.0.1:50054", "learner": False}))
        yield self.cmd(b"add-member node5 127.0.0.1:50055 --learner")
        self.assertEqual(self.node.calls[-1][2]["learner"], True)
        out = yield self.cmd(b"add-member node5 127.0.0.1:50055 --voter")
        self.assertIn("error: the third word may only be --learner", out)
        for line, call in ((b"promote node4", "promote"), (b"remove-member node3", "remove_member"),
                           (b"transfer-leader node2", "transfer_leader")):
            out = yield self.cmd(line)
            self.assertIn("members:", out)
            self.assertEqual(self.node.calls[-1][0], call)
        self.node.fail["remove_member"] = errors.InvalidArgument("node9 is not a member")
        out = yield self.cmd(b"remove-member node9")
        self.assertIn("node9 is not a member", out)

    @defer.inlineCallbacks
    def test_add_member_refuses_an_address_that_is_not_host_port(self):
        calls = len(self.node.calls)
        for bad in (b"127.0.0.1", b"127.0.0.1:port", b"::1:50054", b"127.0.0.1:70000"):
            out = yield self.cmd(b"add-member node4 " + bad)
            self.assertIn("is not HOST:PORT", out)
        self.assertEqual(len(self.node.calls), calls)  # nothing reached the node
        yield self.cmd(b"add-member node4 [::1]:50054")
        self.assertEqual(self.node.calls[-1][2]["address"], "[::1]:50054")

    @defer.inlineCallbacks
    def test_snapshot_and_compact(self):
        out = yield self.cmd(b"snapshot")
        self.assertEqual(out, "log compacted through index 30\r\n")
        out = yield self.cmd(b"compact")
        self.assertEqual(out, "nothing to compact yet\r\n")

    @defer.inlineCallbacks
    def test_loglevel(self):
        out = yield self.cmd(b"loglevel DEBUG")
        self.assertEqual(out, "log level is now debug\r\n")
        self.assertEqual(self.node.log_level, "debug")
        out = yield self.cmd(b"loglevel loud")
        self.assertEqual(out, "error: unknown log level loud: use one of debug, info, warn, error\r\n")
        self.assertEqual(self.node.log_level, "debug")

    @defer.inlineCallbacks
    def test_isolate_and_heal_need_fault_injection(self):
        out = yield self.cmd(b"isolate node2")
        self.assertIn("error: isolate is a fault-injection command: start the node with --enable-fault-injection", out)
        out = yield self.cmd(b"heal")
        self.assertIn("--enable-fault-injection", out)
        out = yield self.cmd(b"isolate")
        self.assertIn("error: usage: isolate PEER...", out)

    @defer.inlineCallbacks
    def test_isolate_and_heal_with_fault_injection(self):
        self.node.fault_injection_enabled = True
        out = yield self.cmd(b"isolate node2 node3")
        self.assertEqual(out, "isolated: traffic with node2, node3 is dropped until heal\r\n")
        self.assertEqual(self.node.isolated, {"node2", "node3"})
        out = yield self.cmd(b"isolate node9")
        self.assertEqual(out, "error: unknown peer node9: the peers are node2, node3\r\n")
        out = yield self.cmd(b"heal")
        self.assertIn("healed", out)
        self.assertEqual(self.node.isolated, set())

    @defer.inlineCallbacks
    def test_node_errors_become_helpful_error_lines(self):
        self.node.fail["put"] = errors.NotLeader(leader_id="node2", leader_addr="127.0.0.1:50052")
        out = yield self.cmd(b"put k v")
        self.assertEqual(out, "error: this node is not the leader; the leader is node2 at 127.0.0.1:50052: try again there\r\n")
        self.node.fail["put"] = errors.NotLeader()
        out = yield self.cmd(b"put k v")
        self.assertIn("no leader is known (election in progress?)", out)
        self.node.fail["get"] = errors.Unavailable("no quorum")
        out = yield self.cmd(b"get k")
        self.assertIn("error: unavailable: no quorum", out)
        self.node.fail["scan"] = errors.TooLarge("reply too big")
        out = yield self.cmd(b"scan")
        self.assertEqual(out, "error: too large: reply too big\r\n")

    @defer.inlineCallbacks
    def test_a_bug_in_the_node_is_an_error_line_not_a_dead_session(self):
        self.node.fail["get"] = ZeroDivisionError("oops")
        out = yield self.cmd(b"get k")
        self.assertIn("error: internal error (ZeroDivisionError: oops); details are in the node log", out)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.node.status = lambda: 1 / 0  # even the prompt's status call
        self.client.send(b"status\n")
        out = yield self.client.expect(b"node1> ")
        self.assertIn(b"error: internal error (ZeroDivisionError", out)
        self.flushLoggedErrors(ZeroDivisionError)

    @defer.inlineCallbacks
    def test_every_command_is_logged_with_the_peer_address(self):
        yield self.cmd(b"get k")
        yield self.cmd(b"put k v")
        text = self.log_text()
        host, port = self.client.transport.getHost().host, self.client.transport.getHost().port
        self.assertIn("admin %s:%d: get k" % (host, port), text)
        self.assertIn("admin %s:%d: put k v" % (host, port), text)

    @defer.inlineCallbacks
    def test_quit_and_exit_and_ctrl_d_close_the_session(self):
        self.client.send(b"quit\n")
        rest = yield self.client.closed()
        self.assertEqual(rest, b"bye\r\n")
        client = yield self.login()
        client.send(b"exit\n")
        yield client.closed()
        client = yield self.login()
        client.send(b"\x04")
        yield client.closed()

    @defer.inlineCallbacks
    def test_backspace_del_and_telnet_erase_edit_the_line(self):
        yield self.cmd(b"get ab\x7fc")
        self.assertEqual(self.node.calls, ["get"])
        yield self.cmd(b"put kk\x08 v")
        self.assertIn(b"k", self.node.data)
        yield self.cmd(b"put k2 v\xc3\xa9" + b"\x7f" + b"w")  # DEL erases the whole é
        self.assertEqual(self.node.data[b"k2"], b"vw")
        yield self.cmd(b"garbage\x15put k3 x" + bytes((telnet.IAC, telnet.EC)) + b"y")
        self.assertEqual(self.node.data[b"k3"], b"y")

    @defer.inlineCallbacks
    def test_pasted_lines_run_in_order_one_at_a_time(self):
        self.node.hold.add("put")
        self.client.send(b"put a 1\nput a 2\nget a\n")
        yield self.wait_until(lambda: self.node.pending)
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.node.calls, ["put"])  # the rest waits
        self.node.release()
        yield self.client.expect(PROMPT)
        yield self.wait_until(lambda: self.node.pending)
        self.node.release()
        yield self.client.expect(PROMPT)
        out = yield self.client.expect(PROMPT)
        self.assertEqual(out, b"2\r\n" + PROMPT)
        self.assertEqual(self.node.calls, ["put", "put", "get"])

    @defer.inlineCallbacks
    def test_a_command_the_node_never_answers_times_out(self):
        self.node.hold.add("put")
        self.client.send(b"put k v\n")
        yield self.wait_until(lambda: self.node.pending)
        self.clock.advance(30)
        out = yield self.client.expect(PROMPT)
        self.assertIn(b"error: no answer from the node within 30s; the command may still complete", out)
        self.node.release()  # late: nothing printed
        out = yield self.cmd(b"get k")
        self.assertEqual(out, "v\r\n")

    @defer.inlineCallbacks
    def test_ctrl_c_stops_waiting_for_a_command(self):
        self.node.hold.add("get")
        self.client.send(b"get k\n")
        yield self.wait_until(lambda: self.node.pending)
        self.client.send(bytes((telnet.IAC, telnet.IP)))
        out = yield self.client.expect(PROMPT)
        self.assertIn(b"^C (the command may still complete in the node)", out)
        self.node.release()
        out = yield self.cmd(b"help get")
        self.assertIn("usage: get KEY", out)

    @defer.inlineCallbacks
    def test_idle_session_is_closed(self):
        self.clock.advance(299)
        yield self.cmd(b"help")  # activity resets the timer
        self.clock.advance(299)
        self.assertTrue(self.client.connected_)
        self.clock.advance(2)
        rest = yield self.client.closed()
        self.assertIn(b"idle for 300s; closing", rest)

    @defer.inlineCallbacks
    def test_are_you_there(self):
        self.client.send(bytes((telnet.IAC, telnet.AYT)))
        yield self.client.expect(b"[yes]\r\n")


class BadInputTests(ShellHarness, unittest.TestCase):
    timeout = 15

    def setUp(self):
        return self.start()

    @defer.inlineCallbacks
    def assertAliveOrClosed(self, client):
        """After bad input: the session answers a command, or it is closed
        -- never a crash (trial fails the test on any logged error)."""
        if client.connected_:
            client.send(b"\r\nhelp quit\r\n")
            try:
                yield client.expect(b"usage: quit")
            except AssertionError:
                self.assertFalse(client.connected_)

    @defer.inlineCallbacks
    def test_binary_garbage_after_login(self):
        client = yield self.login()
        rng = random.Random(6)
        for _ in range(20):
            client.send(bytes(rng.randrange(256) for _ in range(2048)))
        yield task.deferLater(reactor, 0.1, lambda: None)
        yield self.assertAliveOrClosed(client)

    @defer.inlineCallbacks
    def test_binary_garbage_without_control_bytes_gets_error_lines(self):
        client = yield self.login()
        rng = random.Random(7)
        garbage = bytes(rng.choice([b for b in range(256) if b not in (3, 4, 255)]) for _ in range(4096))
        client.send(garbage + b"\n")
        yield self.assertAliveOrClosed(client)
        self.assertTrue(client.connected_)
        self.assertIn(b"error: ", client.received)

    @defer.inlineCallbacks
    def test_binary_garbage_before_login(self):
        client = yield self.connect()
        yield client.expect(b"Password: ")
        client.send(bytes(random.Random(8).randrange(256) for _ in range(8192)))
        yield client.closed()  # too long a line, a ^C, three wrong passwords...
        self.clock.advance(10)

    @defer.inlineCallbacks
    def test_one_mebibyte_line_is_refused_and_closed(self):
        client = yield self.login()
        client.send(b"put k " + b"v" * (1024 * 1024) + b"\n")
        rest = yield client.closed()
        self.assertIn(b"error: line longer than 65536 bytes; closing", rest)
        self.assertEqual(self.node.calls, [])

    @defer.inlineCallbacks
    def test_long_line_before_login_is_refused(self):
        client = yield self.connect()
        yield client.expect(b"Password: ")
        client.send(b"p" * 5000 + b"\n")
        rest = yield client.closed()
        self.assertIn(b"error: line longer than 1024 bytes", rest)

    @defer.inlineCallbacks
    def test_options_offered_or_asked_for_are_refused(self):
        client = yield self.connect()
        yield client.expect(b"Password: ")
        TTYPE, NAWS = 24, 31
        client.send(bytes((telnet.IAC, telnet.DO, TTYPE, telnet.IAC, telnet.WILL, NAWS,
                           telnet.IAC, telnet.DO, telnet.ECHO)))  # DO ECHO: the ack, no reply
        yield client.expect(bytes((telnet.IAC, telnet.WONT, TTYPE, telnet.IAC, telnet.DONT, NAWS)))
        client.send(PASSWORD.encode() + b"\r\n")
        yield client.expect(PROMPT)
        self.assertNotIn(bytes((telnet.IAC, telnet.WONT, telnet.ECHO, telnet.IAC)), client.received)

    @defer.inlineCallbacks
    def test_endless_negotiation_is_cut_off(self):
        client = yield self.login()
        client.send(bytes((telnet.IAC, telnet.WILL, 99)) * 5000)
        rest = yield client.closed()
        self.assertIn(b"error: too much telnet negotiation; closing", rest)

    @defer.inlineCallbacks
    def test_endless_subnegotiation_is_cut_off(self):
        client = yield self.connect()
        yield client.expect(b"Password: ")
        client.send(bytes((telnet.IAC, telnet.SB, 24)) + b"x" * 100000)
        rest = yield client.closed()
        self.assertIn(b"too much telnet negotiation", rest)

    @defer.inlineCallbacks
    def test_session_limit_refuses_extra_connections_with_one_line(self):
        self.factory.max_sessions = 2
        first = yield self.connect()
        yield first.expect(b"Password: ")
        second = yield self.login()
        extra = yield self.connect()
        rest = yield extra.closed()
        self.assertEqual(rest, b"too many admin sessions (limit 2); try again later\r\n")
        self.assertIn("refused admin connection", self.log_text())
        first.transport.loseConnection()
        yield first.lost
        yield self._server_lost[0]
        again = yield self.connect()
        yield again.expect(b"Password: ")
        yield self.command(second, b"status")

    @defer.inlineCallbacks
    def test_many_idle_connections_are_closed_by_the_login_timeout(self):
        clients = []
        for _ in range(8):
            c = yield self.connect()
            yield c.expect(b"Password: ")
            clients.append(c)
        self.assertEqual(len(self.factory.sessions), 8)
        self.clock.advance(60)
        yield defer.gatherResults([c.lost for c in clients])
        yield defer.gatherResults(self._server_lost)
        self.assertEqual(len(self.factory.sessions), 0)

    @defer.inlineCallbacks
    def test_disconnect_mid_command_then_the_answer_arrives(self):
        self.node.hold.update(("get", "put"))
        client = yield self.login()
        client.send(b"get k\nput k v\n")
        yield self.wait_until(lambda: self.node.pending)
        client.transport.loseConnection()
        yield client.lost
        yield defer.gatherResults(self._server_lost)
        self.node.release()  # answered after the client left: no crash
        self.assertEqual(self.node.calls, ["get"])
        self.clock.advance(60)  # the command timeout was cancelled with it

    @defer.inlineCallbacks
    def test_disconnect_mid_command_then_the_node_fails(self):
        self.node.hold.add("put")
        client = yield self.login()
        client.send(b"put k v\n")
        yield self.wait_until(lambda: self.node.pending)
        client.transport.abortConnection()
        yield client.lost
        yield defer.gatherResults(self._server_lost)
        _, d, _ = self.node.pending.pop()
        d.errback(errors.Unavailable("connection lost"))
