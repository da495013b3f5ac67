"""How a line becomes a command's output: the command table and `execute`.

A `Command` is an entry in a `CommandTable`: its name, usage line, a
one-line summary for ``help``, a longer description for ``help CMD``, how
many arguments it takes, and ``run(ctx, args)``.  ``args`` are ``bytes``
words from `geocachedb.admin.quoting.split`; ``run`` returns the text to
print (``str``), a Deferred firing with it, or `Quit`.  The commands
themselves live in `geocachedb.admin.commands`.

`execute` turns one input line into a Deferred that always succeeds with an
`Outcome`: every error -- bad quoting, unknown command, wrong arguments, a
`GeoCacheError` from the node, a bug -- becomes an ``error: ...`` line that
says what was wrong and how to do it right.
"""

import difflib
from dataclasses import dataclass, field
from typing import Callable, Optional

from twisted.internet import defer
from twisted.logger import Logger

from geocachedb import errors
from geocachedb.admin.quoting import QuotingError, quote, split

log = Logger(namespace="geocachedb.admin")


class CommandError(Exception):
    """A command cannot run as typed; the message is shown after ``error:``."""


class UsageError(CommandError):
    """Wrong number or form of arguments."""


@dataclass(frozen=True)
class Quit:
    """Returned by a command to end the session after printing ``message``."""

    message: str = "bye"


@dataclass(frozen=True)
class Outcome:
    """What the session prints for a line, and whether it then closes."""

    text: str
    quit: bool = False


@dataclass
class Context:
    """What a command may use: the node, who is asking, and the table."""

    node: object
    peer: str
    table: "CommandTable"


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    run: Callable
    detail: str = ""
    min_args: int = 0
    max_args: Optional[int] = 0  # None: any number
    aliases: tuple = ()

    def check_arity(self, args):
        if len(args) < self.min_args or (
            self.max_args is not None and len(args) > self.max_args
        ):
            raise UsageError(
                "usage: %s (help %s for details)" % (self.usage, self.name)
            )


@dataclass
class CommandTable:
    commands: dict = field(default_factory=dict)
    _aliases: dict = field(default_factory=dict)

    def add(self, cmd):
        for name in (cmd.name,) + tuple(cmd.aliases):
            if name in self._aliases:
                raise ValueError("admin command %r registered twice" % name)
            self._aliases[name] = cmd
        self.commands[cmd.name] = cmd
        return cmd

    def command(self, name, usage, summary, detail="", min_args=0, max_args=0, aliases=()):
        """Decorator form of `add`."""

        def register(run):
            self.add(Command(name, usage, summary, run, detail.strip(), min_args, max_args, tuple(aliases)))
            return run

        return register

    def lookup(self, name):
        return self._aliases.get(name)

    def suggest(self, name):
        return difflib.get_close_matches(name, list(self._aliases), n=1, cutoff=0.6)

    def __iter__(self):
        return iter(self.commands.values())


# -- running one line -------------------------------------------------------


def execute(ctx, line):
    """Run the command on ``line`` (bytes); a Deferred firing with an
    `Outcome`, never failing."""
    try:
        args = split(line)
        if not args:
            return defer.succeed(Outcome(""))
        name = args[0].decode("utf-8", "replace").lower()
        cmd = ctx.table.lookup(name)
        if cmd is None:
            raise CommandError(unknown_command(ctx.table, args[0]))
        cmd.check_arity(args[1:])
        d = defer.maybeDeferred(cmd.run, ctx, args[1:])
    except Exception:
        d = defer.fail()
    d.addCallbacks(_outcome, _error_outcome, errbackArgs=(ctx, line))
    return d


def unknown_command(table, word):
    """The error for a word that names no command, with a suggestion."""
    name = word.decode("utf-8", "replace").lower()
    hint = table.suggest(name)
    did_you_mean = "did you mean %s? " % hint[0] if hint else ""
    return "unknown command %s: %stype help for the list of commands" % (
        quote(word, limit=40),
        did_you_mean,
    )


def _outcome(result):
    if isinstance(result, Quit):
        return Outcome(result.message, quit=True)
    return Outcome("" if result is None else str(result))


def _error_outcome(failure, ctx, line):
    return Outcome("error: " + describe_error(failure, ctx, line))


def describe_error(failure, ctx=None, line=b""):
    """One line for a failed command: what went wrong and what to do."""
    e = failure.value
    if isinstance(e, (CommandError, QuotingError)):
        return str(e)
    if isinstance(e, errors.NotLeader):
        if e.leader_id:
            where = " at %s" % e.leader_addr if e.leader_addr else ""
            return "this node is not the leader; the leader is %s%s: try again there" % (
                e.leader_id,
                where,
            )
        return "this node is not the leader and no leader is known (election in progress?): try again shortly"
    if isinstance(e, errors.Unavailable):
        return (
            "unavailable: %s (a write may still be applied: read before retrying)"
            % (e.message or "no leader or no quorum")
        )
    if isinstance(e, errors.GeoCacheError):
        return "%s: %s" % (e.code_name.lower().replace("_", " "), e.message or "(no details)")
    log.failure(
        "admin command from {peer} failed: {line}",
        failure,
        peer=ctx.peer if ctx else "?",
        line=loggable(line),
    )
    return "internal error (%s: %s); details are in the node log" % (
        type(e).__name__,
        e,
    )


def loggable(line, limit=200):
    """A line as it may appear in the log: decoded, escaped, truncated."""
    text = line[:limit].decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else "\\x%02x" % ord(c) if ord(c) < 256 else c for c in text)
    return text + ("...(%d bytes)" % len(line) if len(line) > limit else "")
