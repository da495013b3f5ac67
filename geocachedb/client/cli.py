"""``geocache-cli``: the command-line client.

One-shot (``geocache-cli --addr 127.0.0.1:50051 get k``) or interactive
(``geocache-cli --addr ...`` then ``> put k v``), with readline history in
~/.geocache_history.  Exit status of a one-shot command: 0 on success, 1 when
the key does not exist (get, delete), 2 on any error — with a message a
person understands on stderr.
"""

import argparse
import os
import re
import shlex
import sys

from geocachedb import errors
from geocachedb.client.blocking import BlockingClient
from geocachedb.client.results import DeleteResult, PutResult, RangeResult, TxnResult
from geocachedb.client.txn import Compare, Op
from geocachedb.net import parse_address

EXIT_OK, EXIT_MISSING, EXIT_ERROR = 0, 1, 2

HELP = """\
commands:
  get KEY [--rev N] [-w|--kv]
                         read a key (linearizable); --rev: as of revision N;
                         -w/--kv: with its revisions and version
  put KEY VALUE          write a key (the rest of the line is the value)
  delete KEY [--prefix | --range-end END]
                         delete a key (also: del); --prefix: every key
                         starting with KEY; --range-end: keys in [KEY, END)
  scan [PREFIX [LIMIT]]  list keys starting with PREFIX (default limit 100)
  history KEY [--rev N]  the key's earlier values, newest first
  txn                    a transaction read from stdin, as etcdctl's:
                         compares, a blank line, success ops, a blank line,
                         failure ops (see 'help txn')
  incr KEY [DELTA]       add DELTA (default 1) to a decimal integer value
  put-seq PREFIX VALUE   store VALUE under PREFIX + a new sequence number
  compact REV            drop the history below revision REV
  status                 the node's role, term, leader, indexes and revision
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

TXN_HELP = """\
txn reads three parts separated by blank lines (as etcdctl txn):
  compares, one a line:   mod("k") = "5"   value("k") != "x"
                          version("k") > "0"   create("k") = "0"
                          (targets: value, version, create, mod;
                           operators: =, !=, <, >)
  success ops, one a line: put KEY VALUE | del KEY [END|--prefix] |
                          get KEY [END|--prefix] | incr KEY [DELTA]
  failure ops, the same.
It prints SUCCESS or FAILURE, then each op's result after a blank line."""


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


def _flags(args, spec, usage):
    """Split ``args`` into words and the flags of ``spec`` (flag -> bool,
    int or str: the type of its value); "--" ends the flags."""
    words, flags = [], {}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            words.extend(args[i + 1:])
            break
        if a.startswith("-") and len(a) > 1:
            name, eq, inline = a.partition("=")
            kind = spec.get(name)
            if kind is None:
                raise UsageError("unknown option %s; %s" % (name, usage))
            if kind is bool:
                if eq:
                    raise UsageError("%s takes no value; %s" % (name, usage))
                flags[name] = True
            else:
                if not eq:
                    i += 1
                    if i >= len(args):
                        raise UsageError("%s needs a value; %s" % (name, usage))
                    inline = args[i]
                flags[name] = _int(inline, name) if kind is int else inline
        else:
            words.append(a)
        i += 1
    return words, flags


def _int(text, what):
    try:
        return int(text)
    except ValueError:
        raise UsageError("%s must be a whole number, not %r" % (what, text)) from None


def _print_kv(kv, out):
    for name in ("key", "value"):
        print("%-16s %s" % (name, _show(getattr(kv, name))), file=out)
    for name in ("create_revision", "mod_revision", "version", "lease"):
        print("%-16s %d" % (name, getattr(kv, name)), file=out)


def run_history(client, key, revision, out):
    """Walk the key's mod revisions backwards from ``revision`` (0: now):
    ``REVISION VALUE`` lines, newest first, until the key did not exist
    (created there, or deleted before) or the history was compacted."""
    try:
        kv = client.get_kv(key, revision=revision)
    except errors.Compacted as e:
        print("(history at revision %d was compacted: %s)" % (revision, e.message), file=out)
        return EXIT_MISSING
    if kv is None:
        print("(not found)", file=out)
        return EXIT_MISSING
    while True:
        print("%d %s" % (kv.mod_revision, _show(kv.value)), file=out)
        if kv.version <= 1 or kv.mod_revision <= 1:
            print("(created at revision %d)" % kv.create_revision, file=out)
            return EXIT_OK
        before = kv.mod_revision - 1
        try:
            kv = client.get_kv(key, revision=before)
        except errors.Compacted as e:
            print("(history before revision %d was compacted: %s)" % (kv.mod_revision, e.message), file=out)
            return EXIT_OK
        if kv is None:
            return EXIT_OK


# -- txn: etcdctl's interactive / stdin format --------------------------------

_COMPARE = re.compile(r'^\s*([A-Za-z]+)\s*\(\s*(.*?)\s*\)\s*(==|=|!=|<|>)\s*(.*?)\s*$')
_TARGETS = {
    "value": Compare.value, "val": Compare.value, "v": Compare.value,
    "version": Compare.version, "ver": Compare.version,
    "create": Compare.create, "c": Compare.create,
    "mod": Compare.mod, "m": Compare.mod,
}
_NUMERIC = (Compare.version, Compare.create, Compare.mod)


def _unquote(text, what, line_no):
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise UsageError("txn line %d: cannot parse %s: %s" % (line_no, what, e)) from None
    if len(words) != 1:
        raise UsageError("txn line %d: %s must be one (quoted) word, not %r" % (line_no, what, text))
    return words[0]


def parse_compare(line, line_no=1):
    """``mod("k") = "5"`` -> pb.Compare."""
    m = _COMPARE.match(line)
    if not m:
        raise UsageError('txn line %d: not a compare: %r (write e.g. mod("k") = "5" or value("k") != "x")'
                         % (line_no, line))
    target_name, key_text, op, value_text = m.groups()
    target = _TARGETS.get(target_name.lower())
    if target is None:
        raise UsageError("txn line %d: unknown compare target %r (use value, version, create or mod)"
                         % (line_no, target_name))
    key = _encode(_unquote(key_text, "the key", line_no))
    if not key:
        raise UsageError("txn line %d: the key is empty" % line_no)
    value = _unquote(value_text, "the value", line_no) if value_text else None
    if value is None:
        raise UsageError("txn line %d: the compare has no value after %s" % (line_no, op))
    if target in _NUMERIC:
        try:
            value = int(value)
        except ValueError:
            raise UsageError("txn line %d: %s compares with a number, not %r" % (line_no, target_name, value)) \
                from None
    else:
        value = _encode(value)
    t = target(key)
    return {"=": t.__eq__, "==": t.__eq__, "!=": t.__ne__, "<": t.__lt__, ">": t.__gt__}[op](value)


def parse_op(line, line_no=1):
    """``put k v`` / ``del k [END|--prefix]`` / ``get k [END|--prefix]`` /
    ``incr k [DELTA]`` -> pb.RequestOp."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise UsageError("txn line %d: cannot parse: %s" % (line_no, e)) from None
    if not words:
        raise UsageError("txn line %d: empty op" % line_no)
    name, args = words[0].lower(), words[1:]
    if name == "put":
        if len(args) < 2:
            raise UsageError("txn line %d: usage: put KEY VALUE" % line_no)
        return Op.put(_encode(args[0]), _encode(" ".join(args[1:])))
    if name in ("del", "delete", "get"):
        if len(args) not in (1, 2) or not args[0]:
            raise UsageError("txn line %d: usage: %s KEY [END | --prefix]" % (line_no, name))
        key = _encode(args[0])
        if len(args) == 2 and args[1] == "--prefix":
            return Op.delete(prefix=key) if name != "get" else Op.range(prefix=key)
        end = _encode(args[1]) if len(args) == 2 else b""
        if name == "get":
            return Op.range(start=key, end=end) if end else Op.get(key)
        return Op.delete(key, end)
    if name == "incr":
        if len(args) not in (1, 2):
            raise UsageError("txn line %d: usage: incr KEY [DELTA]" % line_no)
        try:
            delta = int(args[1]) if len(args) == 2 else 1
        except ValueError:
            raise UsageError("txn line %d: DELTA must be a whole number, not %r" % (line_no, args[1])) from None
        return Op.incr(_encode(args[0]), delta)
    raise UsageError("txn line %d: unknown op %r (use put, del, get or incr)" % (line_no, words[0]))


TXN_PROMPTS = ("compares:", "success requests (get, put, del, incr):", "failure requests (get, put, del, incr):")


def parse_txn(lines):
    """etcdctl's txn text (an iterable of lines) -> (compares, success,
    failure); UsageError naming the line on anything malformed."""
    sections = [[], [], []]
    part = 0
    for line_no, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            part += 1  # a blank line ends a part (an empty part is one blank line)
            continue
        if part > 2:
            raise UsageError("txn line %d: more than three parts (compares, success ops, failure ops)" % line_no)
        if line.strip().startswith("#"):
            continue
        sections[part].append(parse_compare(line, line_no) if part == 0 else parse_op(line, line_no))
    return tuple(sections)


def read_txn(stream):
    """Read a transaction from ``stream``: all of it, or on a terminal
    part by part with etcdctl's prompts, each ended by an empty line."""
    if hasattr(stream, "isatty") and stream.isatty():
        lines = []
        for prompt in TXN_PROMPTS:
            print(prompt)
            while True:
                try:
                    line = input()
                except EOFError:
                    line = ""
                lines.append(line)
                if not line.strip():
                    break
            print()
        return parse_txn(lines)
    return parse_txn(stream.read().splitlines())


def run_txn(client, parts, out):
    compares, success, failure = parts
    result = client.txn().when(*compares).then(*success).otherwise(*failure).commit()
    print("SUCCESS" if result.succeeded else "FAILURE", file=out)
    for response in result.responses:
        print(file=out)
        _print_op_result(response, out)
    return EXIT_OK


def _print_op_result(response, out):
    if isinstance(response, PutResult):
        print("OK", file=out)
    elif isinstance(response, DeleteResult):
        print(response.count, file=out)
    elif isinstance(response, RangeResult):
        for kv in response.kvs:
            print(_show(kv.key), file=out)
            print(_show(kv.value), file=out)
    elif isinstance(response, TxnResult):
        print("SUCCESS" if response.succeeded else "FAILURE", file=out)
        for r in response.responses:
            _print_op_result(r, out)
    else:
        print(response, file=out)


def run_command(client, words, out, stdin=None):
    """Run one command; return the exit status."""
    if not words:
        return EXIT_OK
    command, args = words[0].lower(), words[1:]
    if command == "help":
        print(TXN_HELP if args and args[0].lower() == "txn" else HELP, file=out)
        return EXIT_OK
    if command == "get":
        usage = "usage: get KEY [--rev N] [-w|--kv]"
        words, flags = _flags(args, {"--rev": int, "-w": bool, "--kv": bool}, usage)
        if len(words) != 1:
            raise UsageError(usage)
        revision = flags.get("--rev", 0)
        if flags.get("-w") or flags.get("--kv"):
            kv = client.get_kv(_encode(words[0]), revision=revision)
            if kv is None:
                print("(not found)", file=out)
                return EXIT_MISSING
            _print_kv(kv, out)
            return EXIT_OK
        value = client.get(_encode(words[0]), revision=revision)
        if value is None:
            print("(not found)", file=out)
            return EXIT_MISSING
        print(_show(value), file=out)
        return EXIT_OK
    if command == "history":
        usage = "usage: history KEY [--rev N]"
        words, flags = _flags(args, {"--rev": int}, usage)
        if len(words) != 1:
            raise UsageError(usage)
        return run_history(client, _encode(words[0]), flags.get("--rev", 0), out)
    if command == "txn":
        if args:
            raise UsageError("usage: txn (the transaction is read from stdin; see 'help txn')")
        return run_txn(client, read_txn(stdin if stdin is not None else sys.stdin), out)
    if command == "incr":
        if len(args) not in (1, 2):
            raise UsageError("usage: incr KEY [DELTA]")
        delta = _int(args[1], "DELTA") if len(args) == 2 else 1
        print(client.incr(_encode(args[0]), delta), file=out)
        return EXIT_OK
    if command in ("put-seq", "put_seq"):
        if len(args) < 2:
            raise UsageError("usage: put-seq PREFIX VALUE")
        print(_show(client.put_sequential(_encode(args[0]), _encode(" ".join(args[1:])))), file=out)
        return EXIT_OK
    if command == "compact":
        if len(args) != 1:
            raise UsageError("usage: compact REV")
        revision = _int(args[0], "REV")
        if revision < 1:
            raise UsageError("REV must be a positive revision")
        client.compact(revision)
        print("compacted: history below revision %d is gone" % revision, file=out)
        return EXIT_OK
    if command == "put":
        if len(args) < 2:
            raise UsageError("usage: put KEY VALUE")
        client.put(_encode(args[0]), _encode(" ".join(args[1:])))
        print("OK", file=out)
        return EXIT_OK
    if command in ("delete", "del"):
        usage = "usage: delete KEY [--prefix | --range-end END]"
        words, flags = _flags(args, {"--prefix": bool, "--range-end": str}, usage)
        if len(words) != 1 or ("--prefix" in flags and "--range-end" in flags):
            raise UsageError(usage)
        if flags:
            if flags.get("--prefix"):
                result = client.delete_range(prefix=_encode(words[0])) if words[0] else \
                    client.delete_range(b"\x00", b"\x00")
            else:
                result = client.delete_range(_encode(words[0]), _encode(flags["--range-end"]))
            print("deleted %d key%s" % (result.count, "" if result.count == 1 else "s"), file=out)
            return EXIT_OK
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
            print("%-16s %s" % (name, value), file=out)
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
