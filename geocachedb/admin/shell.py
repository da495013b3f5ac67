"""One admin session over telnet or a raw socket, and the factory that
serves them.

The node service listens with `make_admin_factory` on the ``--admin``
endpoint.  Each connection is an `AdminSession`, a small state machine:

    PASSWORD --(right password)--> COMMAND --(quit, ^D)--> closed
       |  (wrong: pause, ask again; third time: closed)
       +--(login timeout, ^C, bad input)--> closed

Bytes go through `geocachedb.admin.telnet.TelnetLineReader` (negotiation,
line endings, editing, limits); complete lines are queued and run one at a
time by `geocachedb.admin.dispatch.execute`, so pasted input keeps its
order and a slow command never blocks the reactor: the session waits for
the Deferred, with a timeout after which the result is no longer awaited.
When many lines are queued the transport is paused (back-pressure).

All timing goes through the injected reactor's ``callLater``, so tests run
on `twisted.internet.task.Clock`.
"""

import hashlib
import hmac
from collections import deque

from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger

from geocachedb.admin import commands, dispatch, telnet
from geocachedb.net import describe_peer

log = Logger(namespace="geocachedb.admin")

PASSWORD, WAITING, COMMAND, CLOSED = "password", "waiting", "command", "closed"

MAX_ATTEMPTS = 3
LOGIN_LINE_LIMIT = 1024  # nobody types a longer password
COMMAND_LINE_LIMIT = 64 * 1024
NEGOTIATION_LIMIT = 4096
QUEUE_HIGH_WATER = 64  # queued lines before we stop reading from the socket


class AdminSession(Protocol):
    """The admin shell for one connection."""

    def __init__(self, factory):
        self.factory = factory
        self.state = PASSWORD
        self.peer = "?"
        self._reader = telnet.TelnetLineReader(LOGIN_LINE_LIMIT, NEGOTIATION_LIMIT)
        self._queue = deque()
        self._draining = False
        self._paused = False
        self._attempts = 0
        self._idle = None
        self._retry = None
        self._busy = None  # the IDelayedCall timing out the running command
        self._generation = 0  # which command's result we still wait for

    # -- connection ----------------------------------------------------------

    def connectionMade(self):
        self.peer = describe_peer(self.transport.getPeer())
        self.factory.sessions.add(self)
        log.info("admin connection from {peer}", peer=self.peer)
        self._arm_idle()
        # Negotiation and prompt go out together: a telnet client turns its
        # echo off, a raw client (nc) simply sees the prompt.  We never wait
        # for an answer to the negotiation.
        self.transport.write(self._reader.will_echo())
        self._write(
            "geocachedb admin shell on %s\nPassword: " % (self.factory.node.node_id,)
        )

    def connectionLost(self, reason):
        if self.state == COMMAND:
            log.info("admin session from {peer} ended", peer=self.peer)
        self.state = CLOSED
        self.factory.sessions.discard(self)
        self._queue.clear()
        for call in (self._idle, self._retry, self._busy):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._retry = self._busy = None

    def dataReceived(self, data):
        if self.state == CLOSED:
            return
        self._arm_idle()
        for event in self._reader.feed(data):
            if self.state == CLOSED:
                return
            self._on_event(event)
        self._drain()

    def _on_event(self, event):
        if isinstance(event, telnet.Line):
            self._queue.append(event.data)
        elif isinstance(event, telnet.Reply):
            self.transport.write(event.data)
        elif isinstance(event, telnet.Interrupt):
            self._interrupt()
        elif isinstance(event, telnet.EndOfInput):
            self._close("\nbye")
        elif isinstance(event, telnet.AreYouThere):
            self._write("\n[yes]\n")
        elif isinstance(event, telnet.LineTooLong):
            log.warn(
                "admin connection from {peer}: line longer than {limit} bytes, closing",
                peer=self.peer,
                limit=event.limit,
            )
            self._close("\nerror: line longer than %d bytes; closing" % event.limit)
        elif isinstance(event, telnet.NegotiationFlood):
            log.warn(
                "admin connection from {peer}: more than {limit} bytes of telnet "
                "negotiation without a line, closing",
                peer=self.peer,
                limit=event.limit,
            )
            self._close("\nerror: too much telnet negotiation; closing")

    def _interrupt(self):
        self._queue.clear()
        if self.state != COMMAND:
            self._close("\nbye")
            return
        if self._busy is not None:
            # The node keeps working on it; we just stop waiting.
            self._abandon()
            self._write("^C (the command may still complete in the node)\n")
        else:
            self._write("^C\n")
        self._prompt()

    # -- output --------------------------------------------------------------

    def _write(self, text):
        if self.state == CLOSED or self.transport is None:
            return
        data = text.replace("\n", "\r\n").encode("utf-8")
        self.transport.write(telnet.escape_output(data))

    def _prompt(self):
        self._write(self.prompt())

    def prompt(self):
        node = self.factory.node
        try:
            st = node.status()
            return "%s(%s)> " % (st.get("id", node.node_id), st["role"])
        except Exception:
            # A prompt must never kill the session; status shows the error.
            return "%s> " % (node.node_id,)

    def _close(self, message=None):
        if self.state == CLOSED:
            return
        if message:
            self._write(message + "\n")
        self.state = CLOSED
        self._queue.clear()
        self.transport.loseConnection()

    # -- timers --------------------------------------------------------------

    def _arm_idle(self):
        timeout = (
            self.factory.idle_timeout
            if self.state == COMMAND
            else min(self.factory.login_timeout, self.factory.idle_timeout)
        )
        if self._idle is not None and self._idle.active():
            self._idle.reset(timeout)
        else:
            self._idle = self.factory.reactor.callLater(timeout, self._idle_expired)

    def _idle_expired(self):
        self._idle = None
        if self.state == CLOSED:
            return
        if self._busy is not None:
            self._arm_idle()  # waiting for the node is not idleness
            return
        if self.state == COMMAND:
            log.info("admin session from {peer} idle, closing", peer=self.peer)
            self._close("\nidle for %ds; closing" % self.factory.idle_timeout)
        else:
            log.info("admin connection from {peer} did not log in in time", peer=self.peer)
            self._close("\nno password within %ds; closing" % self.factory.login_timeout)

    # -- the line queue ------------------------------------------------------

    def _drain(self):
        # Re-entrancy guard: a command that finishes synchronously calls
        # _drain again from inside the loop; without the guard a pasted
        # burst of lines would recurse once per line.
        if self._draining:
            return
        self._draining = True
        try:
            while self._queue and self._busy is None and self.state in (PASSWORD, COMMAND):
                line = self._queue.popleft()
                if self.state == PASSWORD:
                    self._check_password(line)
                else:
                    self._run(line)
        finally:
            self._draining = False
        self._flow_control()

    def _flow_control(self):
        if self.state == CLOSED:
            return
        if not self._paused and len(self._queue) > QUEUE_HIGH_WATER:
            self._paused = True
            self.transport.pauseProducing()
        elif self._paused and len(self._queue) <= QUEUE_HIGH_WATER // 2:
            self._paused = False
            self.transport.resumeProducing()

    # -- login ---------------------------------------------------------------

    def _check_password(self, line):
        ok = self.factory.is_password(line)
        self._write("\n")  # the user's Enter was not echoed
        if ok:
            self.state = COMMAND
            self._reader.max_line = COMMAND_LINE_LIMIT
            self.transport.write(self._reader.wont_echo())
            self._arm_idle()
            log.info("admin login from {peer}", peer=self.peer)
            self._write(
                "logged in to %s; type help for the commands, quit to leave\n"
                % (self.factory.node.node_id,)
            )
            self._prompt()
            return
        self._attempts += 1
        log.warn(
            "admin login from {peer} failed (attempt {attempt} of {max})",
            peer=self.peer,
            attempt=self._attempts,
            max=MAX_ATTEMPTS,
        )
        if self._attempts >= MAX_ATTEMPTS:
            self._close("error: wrong password; %d failed attempts, closing" % MAX_ATTEMPTS)
            return
        # Lines typed meanwhile stay queued and are the next attempts.
        self.state = WAITING
        self._retry = self.factory.reactor.callLater(self.factory.failure_delay, self._ask_again)

    def _ask_again(self):
        self._retry = None
        if self.state != WAITING:
            return
        self.state = PASSWORD
        self._write("error: wrong password, try again\nPassword: ")
        self._drain()

    # -- commands ------------------------------------------------------------

    def _run(self, line):
        if not line.strip(b" \t"):
            self._prompt()
            return
        if self.factory.is_password(line):
            # Typed the password again at the prompt: never log it.
            log.info("admin {peer}: (a line equal to the admin password, not logged)", peer=self.peer)
        else:
            log.info("admin {peer}: {command}", peer=self.peer, command=dispatch.loggable(line))
        self._generation += 1
        generation = self._generation
        ctx = dispatch.Context(self.factory.node, self.peer, self.factory.commands)
        self._busy = self.factory.reactor.callLater(
            self.factory.command_timeout, self._timed_out, generation
        )
        d = dispatch.execute(ctx, line)
        d.addCallback(self._done, generation)
        d.addErrback(
            lambda f: log.failure("admin session from {peer} failed", f, peer=self.peer)
        )

    def _done(self, outcome, generation):
        if generation != self._generation or self._busy is None or self.state == CLOSED:
            # The client left, pressed ^C, or we gave up waiting: nobody to
            # tell.  The log line of the command is the record.
            return
        self._busy.cancel()
        self._busy = None
        if outcome.quit:
            log.info("admin session from {peer} quit", peer=self.peer)
            self._close(outcome.text)
            return
        if outcome.text:
            self._write(outcome.text + "\n")
        self._prompt()
        self._drain()

    def _timed_out(self, generation):
        if generation != self._generation or self._busy is None:
            return
        self._busy = None
        self._generation += 1
        log.warn("admin {peer}: command got no answer in {timeout}s", peer=self.peer,
                 timeout=self.factory.command_timeout)
        self._write(
            "error: no answer from the node within %ds; the command may still "
            "complete (for a write, read the key before retrying)\n"
            % self.factory.command_timeout
        )
        self._prompt()
        self._drain()

    def _abandon(self):
        if self._busy is not None:
            self._busy.cancel()
            self._busy = None
        self._generation += 1


class _Refusal(Protocol):
    """What a connection over the session limit gets: one line, then close."""

    def __init__(self, factory):
        self.factory = factory

    def connectionMade(self):
        peer = describe_peer(self.transport.getPeer())
        log.warn(
            "refused admin connection from {peer}: {limit} sessions already open",
            peer=peer,
            limit=self.factory.max_sessions,
        )
        self.transport.write(
            b"too many admin sessions (limit %d); try again later\r\n" % self.factory.max_sessions
        )
        self.transport.loseConnection()


class AdminShellFactory(ServerFactory):
    """Serves `AdminSession`s for one node, at most ``max_sessions`` at a
    time (logged-in or not)."""

    def __init__(
        self,
        node,
        password,
        max_sessions=8,
        idle_timeout=300,
        reactor=None,
        login_timeout=60,
        failure_delay=1.0,
        command_timeout=30,
        command_table=None,
    ):
        if reactor is None:
            from twisted.internet import reactor
        if isinstance(password, str):
            password = password.encode("utf-8")
        if not password:
            raise ValueError("the admin password must not be empty")
        self.node = node
        self._password_digest = hashlib.sha256(password).digest()
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.login_timeout = login_timeout
        self.failure_delay = failure_delay
        self.command_timeout = command_timeout
        self.reactor = reactor
        self.commands = command_table if command_table is not None else commands.COMMANDS
        self.sessions = set()

    def is_password(self, attempt):
        # Digests of equal length, compared in constant time: neither the
        # content nor the length of the password leaks through timing.
        return hmac.compare_digest(hashlib.sha256(attempt).digest(), self._password_digest)

    def buildProtocol(self, addr):
        if len(self.sessions) >= self.max_sessions:
            return _Refusal(self)
        return AdminSession(self)

    def __repr__(self):
        # The default repr would be harmless, but make sure nothing that
        # logs the factory can ever print the password.
        return "<AdminShellFactory node=%s sessions=%d>" % (self.node.node_id, len(self.sessions))


def make_admin_factory(node, password, max_sessions=8, idle_timeout=300, reactor=None, **options):
    """The `ServerFactory` for the admin shell of ``node`` (an
    `INodeControl`); listen on it with an endpoint, e.g.
    ``serverFromString(reactor, "tcp:6051:interface=127.0.0.1")``.

    ``options``: ``login_timeout`` (s, default 60), ``failure_delay`` (s
    after a wrong password, default 1), ``command_timeout`` (s to wait for
    the node, default 30), ``command_table``.
    """
    return AdminShellFactory(node, password, max_sessions, idle_timeout, reactor, **options)
