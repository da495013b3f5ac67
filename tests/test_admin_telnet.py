"""Telnet handling of the admin shell: the line reader on its own, and the
real ``telnet`` program driven through a pseudo-terminal."""

import os
import shutil

from hypothesis import given, strategies as st
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from geocachedb.admin import telnet
from geocachedb.admin.telnet import (
    AreYouThere,
    EndOfInput,
    Interrupt,
    Line,
    LineTooLong,
    NegotiationFlood,
    Reply,
    TelnetLineReader,
)
from tests.test_admin_shell import PASSWORD, PROMPT, ShellHarness

IAC, DO, DONT, WILL, WONT, SB, SE = (telnet.IAC, telnet.DO, telnet.DONT, telnet.WILL,
                                     telnet.WONT, telnet.SB, telnet.SE)
ECHO, TTYPE, NAWS = telnet.ECHO, 24, 31


def cmd(*values):
    return bytes(values)


class TelnetLineReaderTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.reader = TelnetLineReader(max_line=32, max_negotiation=64)

    def feed(self, data):
        return self.reader.feed(data)

    def test_every_line_ending_ends_a_line(self):
        self.assertEqual(
            self.feed(b"a\r\nb\r\x00c\nd\re\n"),
            [Line(b"a"), Line(b"b"), Line(b"c"), Line(b"d"), Line(b"e")],
        )

    def test_cr_lf_split_across_reads_is_one_line_ending(self):
        self.assertEqual(self.feed(b"a\r"), [Line(b"a")])
        self.assertEqual(self.feed(b"\nb\n"), [Line(b"b")])

    def test_doubled_iac_is_a_data_byte(self):
        self.assertEqual(self.feed(b"a\xff\xffb\n"), [Line(b"a\xffb")])

    def test_options_are_refused_and_acks_are_not_answered(self):
        self.assertEqual(self.feed(cmd(IAC, DO, TTYPE)), [Reply(cmd(IAC, WONT, TTYPE))])
        self.assertEqual(self.feed(cmd(IAC, WILL, NAWS)), [Reply(cmd(IAC, DONT, NAWS))])
        self.assertEqual(self.feed(cmd(IAC, WONT, NAWS, IAC, DONT, TTYPE)), [])

    def test_echo_is_ours_only_while_asked_for(self):
        self.assertEqual(self.reader.will_echo(), cmd(IAC, WILL, ECHO))
        self.assertEqual(self.reader.will_echo(), b"")  # no repeated requests
        self.assertEqual(self.feed(cmd(IAC, DO, ECHO)), [])  # the client's ack
        self.assertEqual(self.reader.wont_echo(), cmd(IAC, WONT, ECHO))
        self.assertEqual(self.reader.wont_echo(), b"")
        self.assertEqual(self.feed(cmd(IAC, DONT, ECHO)), [])  # its ack
        self.assertEqual(self.feed(cmd(IAC, DO, ECHO)), [Reply(cmd(IAC, WONT, ECHO))])

    def test_client_refusing_echo_turns_it_off(self):
        self.reader.will_echo()
        self.assertEqual(self.feed(cmd(IAC, DONT, ECHO)), [Reply(cmd(IAC, WONT, ECHO))])
        self.assertEqual(self.reader.wont_echo(), b"")

    def test_commands_split_across_reads(self):
        self.assertEqual(self.feed(b"ab" + cmd(IAC)), [])
        self.assertEqual(self.feed(cmd(DO)), [])
        self.assertEqual(self.feed(cmd(TTYPE) + b"c\n"), [Reply(cmd(IAC, WONT, TTYPE)), Line(b"abc")])

    def test_subnegotiation_is_skipped(self):
        data = b"st" + cmd(IAC, SB, TTYPE, 0) + b"xterm\xff\xff" + cmd(IAC, SE) + b"atus\n"
        self.assertEqual(self.feed(data), [Line(b"status")])

    def test_editing(self):
        self.assertEqual(self.feed(b"ab\x7fc\x08d\n"), [Line(b"ad")])
        self.assertEqual(self.feed("xé".encode() + b"\x7f\n"), [Line(b"x")])
        self.assertEqual(self.feed(b"junk\x15ok\n"), [Line(b"ok")])
        self.assertEqual(self.feed(b"ab" + cmd(IAC, telnet.EC) + b"c" + b"\n"), [Line(b"ac")])
        self.assertEqual(self.feed(b"ab" + cmd(IAC, telnet.EL) + b"c" + b"\n"), [Line(b"c")])
        self.assertEqual(self.feed(b"\x7f\x7f\n"), [Line(b"")])

    def test_interrupt_end_of_input_and_are_you_there(self):
        self.assertEqual(self.feed(b"half\x03"), [Interrupt()])
        self.assertEqual(self.feed(cmd(IAC, telnet.IP) + b"x\n"), [Interrupt(), Line(b"x")])
        self.assertEqual(self.feed(b"typed\x04\n"), [Line(b"typed")])  # ^D only on an empty line
        self.assertEqual(self.feed(b"\x04"), [EndOfInput()])
        self.assertEqual(self.feed(cmd(IAC, telnet.AYT)), [AreYouThere()])
        self.assertEqual(self.feed(cmd(IAC, telnet.NOP, IAC, telnet.GA) + b"\n"), [Line(b"")])

    def test_too_long_line_is_reported_once_and_dropped(self):
        events = self.feed(b"x" * 100 + b"\nnext\n")
        self.assertEqual(events, [LineTooLong(32), Line(b"next")])
        self.reader.max_line = 200
        self.assertEqual(self.feed(b"y" * 100 + b"\n"), [Line(b"y" * 100)])

    def test_negotiation_flood_is_reported_and_input_ignored_after(self):
        events = self.feed(cmd(IAC, WILL, 99) * 30 + b"status\n")
        self.assertEqual(events[-1], NegotiationFlood(64))
        self.assertEqual(self.feed(b"status\n"), [])

    def test_negotiation_budget_resets_at_each_line(self):
        for _ in range(10):
            events = self.feed(cmd(IAC, telnet.NOP) * 20 + b"x\n")
            self.assertEqual(events, [Line(b"x")])

    @given(st.binary(max_size=300), st.lists(st.integers(1, 300), max_size=10))
    def test_how_input_is_split_into_reads_does_not_matter(self, data, cuts):
        whole = TelnetLineReader(max_line=40, max_negotiation=60).feed(data)
        reader = TelnetLineReader(max_line=40, max_negotiation=60)
        pieces, at = [], 0
        for cut in sorted(cuts):
            pieces.append(data[at:cut])
            at = max(at, cut)
        pieces.append(data[at:])
        self.assertEqual([e for p in pieces for e in reader.feed(p)], whole)
        one_by_one = TelnetLineReader(max_line=40, max_negotiation=60)
        self.assertEqual([e for b in data for e in one_by_one.feed(bytes((b,)))], whole)

    def test_escape_output_doubles_iac(self):
        self.assertEqual(telnet.escape_output(b"a\xffb"), b"a\xff\xffb")


TELNET = shutil.which("telnet")


class Screen(ProcessProtocol):
    """What the user of a terminal sees, and a keyboard."""

    def __init__(self):
        self.received = b""
        self._seen = 0
        self._waiting = None
        self.ended = defer.Deferred()
        self.running = True

    def outReceived(self, data):
        self.received += data
        self._check()

    errReceived = outReceived

    def processEnded(self, reason):
        self.running = False
        self.ended.callback(None)

    def type(self, keys):
        self.transport.write(keys)

    def expect(self, needle, timeout=8):
        d = defer.Deferred()
        self._waiting = (needle, d)

        def timed_out(result, t):
            self._waiting = None
            raise AssertionError("%r not on the screen; it shows %r" % (needle, self.received))

        d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)
        self._check()
        return d

    def _check(self):
        if self._waiting is None:
            return
        needle, d = self._waiting
        at = self.received.find(needle, self._seen)
        if at >= 0:
            self._waiting = None
            chunk = self.received[self._seen : at + len(needle)]
            self._seen = at + len(needle)
            d.callback(chunk)


class RealTelnetClientTests(ShellHarness, unittest.TestCase):
    timeout = 20
    if TELNET is None:
        skip = "telnet not installed (make test installs it)"

    def setUp(self):
        return self.start()

    def spawn_telnet(self):
        screen = Screen()
        env = {"TERM": "dumb", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.mktemp()}
        process = reactor.spawnProcess(
            screen, TELNET, ["telnet", "127.0.0.1", str(self.port.getHost().port)],
            env=env, usePTY=True,
        )

        def stop():
            if screen.running:
                process.signalProcess("KILL")
            return screen.ended

        self.addCleanup(stop)
        return screen

    @defer.inlineCallbacks
    def test_login_status_quit_with_the_real_telnet_client(self):
        screen = self.spawn_telnet()
        yield screen.expect(b"Password: ")
        screen.type(PASSWORD.encode() + b"\r")
        yield screen.expect(b"logged in to node1")
        yield screen.expect(PROMPT)
        # Echo is back on after login: the typed command shows.
        screen.type(b"status\r")
        out = yield screen.expect(PROMPT)
        self.assertIn(b"status\r\n", out)
        self.assertIn(b"role            leader\r\n", out)
        self.assertIn(b"node2  127.0.0.1:50052  yes", out)
        # Backspace edited by the terminal, delivered as a clean line.
        screen.type(b"get kx\x7f\r")
        out = yield screen.expect(PROMPT)
        self.assertIn(b"(not found)", out)
        self.assertEqual(self.node.calls, ["get"])
        screen.type(b"quit\r")
        yield screen.expect(b"bye")
        yield screen.ended
        self.assertNotIn(PASSWORD.encode(), screen.received)
        self.assertNotIn(b"\r\r\n", screen.received)

    @defer.inlineCallbacks
    def test_wrong_password_is_not_echoed_either(self):
        screen = self.spawn_telnet()
        yield screen.expect(b"Password: ")
        screen.type(b"not-the-password\r")
        yield screen.expect(b"\n")
        self.clock.advance(1)
        yield screen.expect(b"Password: ")
        screen.type(PASSWORD.encode() + b"\r")
        yield screen.expect(PROMPT)
        self.assertNotIn(b"not-the-password", screen.received)
