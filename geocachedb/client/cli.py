"""``geocache-cli``: the command-line client.

One-shot (``geocache-cli --addr 127.0.0.1:50051 get k``) or interactive
(``geocache-cli --addr ...`` then ``> put k v``), with readline history in
~/.geocache_history.  Exit status of a one-shot command: 0 on success, 1 when
the key does not exist (get, delete), 2 on any error — with a message a
person understands on stderr.
"""

import argparse
import os
import shlex
import sys

from geocachedb import errors
from geocachedb.client.blocking import BlockingClient
from geocachedb.net import parse_address

EXIT_OK, EXIT_MISSING, EXIT_ERROR = 0, 1, 2

HELP = """\
commands:
  get KEY                read a key (linearizable)
  put KEY VALUE          write a key (the rest of the line is the value)
  delete KEY             delete a key
  scan [PREFIX [LIMIT]]  list keys starting with PREFIX (default limit 100)
  status                 the node's role, term, leader and indexes
  backup FILE            write a consistent backup of every key to FILE
                         (restore: twistd -n geocache --restore FILE ...)
  member list            the cluster's members (* marks the leader)
  member add ID HOST:PORT [--learner]
                         add a node (a learner, promoted once caught up)
  member promote ID      make a caught-up learner a voter
  member remove ID       remove a node (the leader too)
  member transfer ID     hand leadership to voter ID
  help                   this text
  quit                   leave (also: exit, Ctrl-D)
Quote keys or values with spaces: put "my key" "my value"."""


class UsageError(Exception):
    pass


def _encode(text):
    return text.encode("utf-8", "surrogateescape")


def _show(data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return repr(data)
    return text if text.isprintable() else repr(data)


def run_command(client, words, out):
    """Run one command; return the exit status."""
    if not words:
        return EXIT_OK
    command, args = words[0].lower(), words[1:]
    if command == "help":
        print(HELP, file=out)
        return EXIT_OK
    if command == "get":
        if len(args) != 1:
            raise UsageError("usage: get KEY")
        value = client.get(_encode(args[0]))
        if value is None:
            print("(not found)", file=out)
            return EXIT_MISSING
        print(_show(value), file=out)
        return EXIT_OK
    if command == "put":
        if len(args) < 2:
            raise UsageError("usage: put KEY VALUE")
        client.put(_encode(args[0]), _encode(" ".join(args[1:])))
        print("OK", file=out)
        return EXIT_OK
    if command == "delete":
        if len(args) != 1:
            raise UsageError("usage: delete KEY")
        if client.delete(_encode(args[0])):
            print("deleted", file=out)
            return EXIT_OK
        print("(not found)", file=out)
        return EXIT_MISSING
    if command == "scan":
        if len(args) > 2:
            raise UsageError("usage: scan [PREFIX [LIMIT]]")
        prefix = _encode(args[0]) if args else b""
        try:
            limit = int(args[1]) if len(args) > 1 else 100
        except ValueError:
            raise UsageError("LIMIT must be a number") from None
        pairs, more = client.range(prefix=prefix, limit=limit)
        for key, value in pairs:
            print("%s = %s" % (_show(key), _show(value)), file=out)
        print("(%d key%s%s)" % (len(pairs), "" if len(pairs) == 1 else "s", ", more" if more else ""), file=out)
        return EXIT_OK
    if command == "member":
        return run_member(client, args, out)
    if command == "backup":
        if len(args) != 1:
            raise UsageError("usage: backup FILE")
        try:
            index, keys, sha = client.backup(args[0])
        except OSError as e:
            raise UsageError("cannot write %s: %s" % (args[0], e.strerror or e)) from None
        except ValueError as e:
            raise UsageError("the backup received is damaged (%s); nothing was written" % e) from None
        print("backup of %d keys at index %d written to %s (sha256 %s)" % (keys, index, args[0], sha), file=out)
        return EXIT_OK
    if command == "status":
        for name, value in client.status().items():
            print("%-14s %s" % (name, value), file=out)
        return EXIT_OK
    raise UsageError("unknown command %r (type 'help')" % command)


def run_member(client, args, out):
    usage = "usage: member list | add ID HOST:PORT [--learner] | promote ID | remove ID | transfer ID"
    if not args:
        raise UsageError(usage)
    action, rest = args[0].lower(), args[1:]
    if action == "list" and not rest:
        members = client.members()
    elif action == "add" and len(rest) in (2, 3):
        if len(rest) == 3 and rest[2] != "--learner":
            raise UsageError(usage)
        try:
            parse_address(rest[1])
        except ValueError as e:
            raise UsageError(str(e)) from None
        members = client.add_member(rest[0], rest[1], learner=len(rest) == 3)
    elif action in ("promote", "remove", "transfer") and len(rest) == 1:
        call = {"promote": client.promote_member, "remove": client.remove_member,
                "transfer": client.transfer_leader}[action]
        members = call(rest[0])
    else:
        raise UsageError(usage)
    for m in members:
        print("%-12s %-22s %-8s%s" % (m["id"], m["address"] or "-", m["role"], "  leader" if m["is_leader"] else ""), file=out)
    return EXIT_OK


def _split(line):
    try:
        return shlex.split(line)
    except ValueError as e:
        raise UsageError("cannot parse the line: %s" % e) from None


def interactive(client, address):
    try:
        import readline

        history = os.path.expanduser("~/.geocache_history")
        try:
            readline.read_history_file(history)
        except OSError:
            pass
    except ImportError:
        readline = None
    print("connected to %s; type 'help' for commands" % address)
    try:
        while True:
            try:
                line = input("> ")
            except EOFError:
                print()
                break
            except KeyboardInterrupt:
                print()
                continue
            try:
                words = _split(line)
                if words and words[0].lower() in ("quit", "exit"):
                    break
                run_command(client, words, sys.stdout)
            except UsageError as e:
                print("error: %s" % e)
            except errors.GeoCacheError as e:
                print("error: %s" % describe(e))
    finally:
        if readline is not None:
            try:
                readline.write_history_file(history)
            except OSError:
                pass


def describe(error):
    if isinstance(error, errors.Unavailable):
        return error.message
    return "%s (%s)" % (error.message, error.code_name)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="geocache-cli",
        description="Talk to a geocachedb cluster.",
        epilog="Exit status: 0 success, 1 key not found, 2 error.",
    )
    parser.add_argument(
        "--addr",
        default=os.environ.get("GEOCACHE_ADDR", "127.0.0.1:50051"),
        help="HOST:PORT of a node; several comma-separated for failover (default %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per command (default %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="a command to run once (see 'help')")
    args = parser.parse_args(argv)
    try:
        client = BlockingClient(args.addr.split(","), timeout=args.timeout)
    except ValueError as e:
        print("geocache-cli: %s" % e, file=sys.stderr)
        return EXIT_ERROR
    try:
        if not args.command:
            interactive(client, args.addr)
            return EXIT_OK
        return run_command(client, args.command, sys.stdout)
    except UsageError as e:
        print("geocache-cli: %s" % e, file=sys.stderr)
        return EXIT_ERROR
    except errors.GeoCacheError as e:
        print("geocache-cli: %s" % describe(e), file=sys.stderr)
        return EXIT_ERROR
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
