"""Bytes to lines for the admin shell: a minimal telnet (RFC 854) reader.

The admin shell must work with the real ``telnet`` program, which speaks
option negotiation, and with ``nc`` or a raw socket, which do not.  Twisted's
`AuthenticatingTelnetProtocol` waits for an echo negotiation that ``nc``
never answers, and `TelnetTransport` turns ``\\r\\n`` into ``\\r\\r\\n``; so
this module is a small, pure parser instead (no transport, no reactor):
`TelnetLineReader.feed` takes received bytes and returns events for the
session (`geocachedb.admin.shell`) to act on.

What it does:

- strips IAC sequences and answers them: we refuse every option the client
  offers or asks for, except ECHO while the shell asks for it (so the
  password is not echoed by the client);
- assembles lines ending in CR LF, CR NUL, lone CR or LF;
- edits the line: BS/DEL and IAC EC erase a character (a whole UTF-8
  sequence), ^U and IAC EL erase the line;
- bounds what a client can make us hold: a line longer than ``max_line``
  and more than ``max_negotiation`` bytes of telnet commands between two
  lines are reported (the shell then closes), and nothing is buffered for
  subnegotiations (we never agree to an option that uses them).
"""

import re
from dataclasses import dataclass

IAC = 255
DONT = 254
DO = 253
WONT = 252
WILL = 251
SB = 250
GA = 249
EL = 248
EC = 247
AYT = 246
AO = 245
IP = 244
BRK = 243
DM = 242
NOP = 241
SE = 240
EOF = 236

ECHO = 1
SGA = 3

BS = 0x08
DEL = 0x7F
CTRL_C = 0x03
CTRL_D = 0x04
CTRL_U = 0x15
CR = 0x0D
LF = 0x0A
NUL = 0x00


@dataclass(frozen=True)
class Line:
    """A complete input line, without its line ending."""

    data: bytes


@dataclass(frozen=True)
class Reply:
    """Negotiation bytes to send back to the client right away."""

    data: bytes


@dataclass(frozen=True)
class Interrupt:
    """^C (raw, or IAC IP from a telnet client): the partial line is gone."""


@dataclass(frozen=True)
class EndOfInput:
    """^D on an empty line (or IAC EOF): the user wants to leave."""


@dataclass(frozen=True)
class AreYouThere:
    """IAC AYT: the client wants a sign of life."""


@dataclass(frozen=True)
class LineTooLong:
    """The current line passed ``max_line`` bytes; it is being discarded."""

    limit: int


@dataclass(frozen=True)
class NegotiationFlood:
    """More than ``max_negotiation`` bytes of telnet commands since the last
    line: no honest client does that."""

    limit: int


# Bytes that need a decision of their own; everything else is line data.
_PLAIN = re.compile(rb"[^\x00\x03\x04\x08\x0a\x0d\x15\x7f\xff]+")

# Parser states
_DATA, _IAC, _OPTION, _SB, _SB_IAC = range(5)


def command(verb, option):
    """The three bytes IAC ``verb`` ``option``."""
    return bytes((IAC, verb, option))


def escape_output(data):
    """Bytes for the wire: a literal 0xFF must be doubled (IAC IAC)."""
    return data.replace(b"\xff", b"\xff\xff")


class TelnetLineReader:
    """Turns a byte stream into `Line`, `Reply` and other events.

    ``max_line`` may be changed between calls (the shell allows short lines
    before login and longer ones after).
    """

    def __init__(self, max_line=65536, max_negotiation=4096):
        self.max_line = max_line
        self.max_negotiation = max_negotiation
        self._state = _DATA
        self._verb = None
        self._line = bytearray()
        self._after_cr = False
        self._discarding = False
        self._negotiation = 0
        self._flooded = False
        # Options we have agreed to perform (only ECHO, and only while the
        # shell wants it).  The client never gets to enable any of its own.
        self._local = set()

    # -- options the shell turns on and off --------------------------------

    def will_echo(self):
        """Bytes that ask the client to stop echoing locally (for the
        password prompt); we then do not echo either."""
        if ECHO in self._local:
            return b""
        self._local.add(ECHO)
        return command(WILL, ECHO)

    def wont_echo(self):
        """Bytes that hand echoing back to the client."""
        if ECHO not in self._local:
            return b""
        self._local.discard(ECHO)
        return command(WONT, ECHO)

    # -- input ---------------------------------------------------------------

    def feed(self, data):
        """Consume ``data``; return the list of events it completes."""
        events = []
        i, n = 0, len(data)
        while i < n:
            if self._flooded:
                break
            state = self._state
            if state == _DATA and not self._after_cr:
                # Fast path: ordinary bytes are copied a run at a time, so a
                # long line costs one slice instead of a Python step per byte.
                run = _PLAIN.match(data, i)
                if run is not None:
                    self._append_run(run.group(), events)
                    i = run.end()
                    continue
            byte = data[i]
            i += 1
            if state == _DATA:
                self._data_byte(byte, events)
            else:
                self._negotiation += 1
                if self._negotiation > self.max_negotiation:
                    self._flooded = True
                    events.append(NegotiationFlood(self.max_negotiation))
                    break
                if state == _IAC:
                    self._iac_byte(byte, events)
                elif state == _OPTION:
                    self._option_byte(byte, events)
                elif state == _SB:
                    if byte == IAC:
                        self._state = _SB_IAC
                else:  # _SB_IAC: IAC SE ends it, IAC IAC is data inside it
                    self._state = _DATA if byte == SE else _SB
        return events

    def _data_byte(self, byte, events):
        if self._after_cr:
            self._after_cr = False
            # CR LF and CR NUL are one line ending (RFC 854); a lone CR
            # already ended the line, and this byte starts the next one.
            if byte in (LF, NUL):
                return
        if byte == IAC:
            self._negotiation += 1
            self._state = _IAC
        elif byte == CR:
            self._after_cr = True
            self._end_line(events)
        elif byte == LF:
            self._end_line(events)
        elif byte in (BS, DEL):
            self._erase_char()
        elif byte == CTRL_U:
            self._line.clear()
        elif byte == CTRL_C:
            self._line.clear()
            self._discarding = False
            events.append(Interrupt())
        elif byte == CTRL_D:
            if not self._line and not self._discarding:
                events.append(EndOfInput())
        elif byte == NUL:
            pass
        else:
            self._append(byte, events)

    def _append(self, byte, events):
        if self._discarding:
            return
        if len(self._line) >= self.max_line:
            self._discarding = True
            self._line.clear()
            events.append(LineTooLong(self.max_line))
            return
        self._line.append(byte)

    def _append_run(self, run, events):
        if self._discarding:
            return
        if len(self._line) + len(run) > self.max_line:
            self._discarding = True
            self._line.clear()
            events.append(LineTooLong(self.max_line))
            return
        self._line += run

    def _end_line(self, events):
        self._negotiation = 0
        if self._discarding:
            self._discarding = False
            return
        events.append(Line(bytes(self._line)))
        self._line.clear()

    def _erase_char(self):
        if not self._line:
            return
        # Remove a whole UTF-8 character: continuation bytes are 10xxxxxx.
        while len(self._line) > 1 and self._line[-1] & 0xC0 == 0x80:
            del self._line[-1]
        del self._line[-1]

    def _iac_byte(self, byte, events):
        self._state = _DATA
        if byte == IAC:
            # An escaped 0xFF data byte; it does not count as negotiation.
            self._negotiation -= 2
            self._append(IAC, events)
        elif byte in (DO, DONT, WILL, WONT):
            self._verb = byte
            self._state = _OPTION
        elif byte == SB:
            self._state = _SB
        elif byte == EC:
            self._erase_char()
        elif byte == EL:
            self._line.clear()
        elif byte == IP:
            self._line.clear()
            self._discarding = False
            events.append(Interrupt())
        elif byte == EOF:
            if not self._line:
                events.append(EndOfInput())
        elif byte == AYT:
            events.append(AreYouThere())
        # NOP, DM, BRK, AO, GA and unknown commands: nothing to do.

    def _option_byte(self, option, events):
        self._state = _DATA
        verb = self._verb
        if verb == DO:
            # Already agreed (the client acknowledging our WILL): silence;
            # otherwise refuse.
            if option not in self._local:
                events.append(Reply(command(WONT, option)))
        elif verb == DONT:
            if option in self._local:
                self._local.discard(option)
                events.append(Reply(command(WONT, option)))
        elif verb == WILL:
            # We want none of the client's options.
            events.append(Reply(command(DONT, option)))
        # WONT: the client's option is off, which is what we want.
