"""The admin shell's commands: one table entry per command.

Each command is a function ``run(ctx, args)`` registered in `COMMANDS` with
the `command` decorator, together with its usage line, a one-line summary
for ``help`` and a longer description for ``help CMD`` (see
`geocachedb.admin.dispatch` for the contract).  Commands talk to the node
only through `geocachedb.interfaces.INodeControl` (``ctx.node``).  A new
command is one more decorated function here.
"""

from twisted.internet import defer

from geocachedb import limits
from geocachedb.admin import formatting as fmt
from geocachedb.admin.dispatch import (
    CommandError,
    CommandTable,
    Quit,
    UsageError,
    unknown_command,
)
from geocachedb.admin.quoting import quote
from geocachedb.net import format_address, parse_address

COMMANDS = CommandTable()
command = COMMANDS.command


# -- argument helpers ---------------------------------------------------------


def _key(raw):
    if not raw:
        raise UsageError('keys must not be empty: write a key, or x\'00\' for a zero byte')
    if len(raw) > limits.MAX_KEY_SIZE:
        raise UsageError(
            "key is %d bytes; the limit is %d" % (len(raw), limits.MAX_KEY_SIZE)
        )
    return raw


def _positive_int(raw, what, maximum):
    try:
        n = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        n = None
    if n is None or not 1 <= n <= maximum:
        raise UsageError(
            "%s must be a whole number from 1 to %d, not %s" % (what, maximum, quote(raw, 40))
        )
    return n


def _text(raw):
    return raw.decode("utf-8", "replace")


def _revision(raw, what="REV"):
    try:
        n = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        n = None
    if n is None or n < 1:
        raise UsageError("%s must be a positive revision number, not %s" % (what, quote(raw, 40)))
    return n


# -- the commands -------------------------------------------------------------


@command(
    "help",
    "help [CMD]",
    "list the commands, or describe one",
    """
Without an argument, lists every command with one line about it.
With a command name, shows its usage and what it does.
Example: help scan
""",
    max_args=1,
)
def _help(ctx, args):
    if args:
        name = _text(args[0]).lower()
        cmd = ctx.table.lookup(name)
        if cmd is None:
            raise CommandError(unknown_command(ctx.table, args[0]))
        text = "usage: %s\n%s" % (cmd.usage, cmd.summary)
        if cmd.detail:
            text += "\n\n" + cmd.detail
        if cmd.aliases:
            text += "\n\naliases: " + ", ".join(cmd.aliases)
        return text
    rows = [(cmd.usage, cmd.summary) for cmd in ctx.table]
    return (
        "commands (help CMD for details):\n"
        + fmt.table(None, rows, indent="  ")
        + "\n\nkeys and values: \"a b\", \"\\x00\\xff\" or x'00ff' for spaces and binary bytes"
    )


@command(
    "status",
    "status",
    "this node's role, term, indexes, storage, uptime and peers",
    """
Shows this node's Raft state (role, term, leader, commit and applied
index, log length, last snapshot), the key space's revision and
compaction point (reads below it fail), its storage backend and data size,
its uptime, and a table of peers: whether the connection is up, the
highest log index known to be replicated there (match, on the leader)
and when we last heard from it.
""",
)
def _status(ctx, args):
    st = ctx.node.status()
    first, last = st.get("log_first_index"), st.get("log_last_index")
    if first is not None and last is not None:
        length = max(0, last - first + 1)
        log_line = "%d %s (%d..%d)" % (length, "entry" if length == 1 else "entries", first, last)
    else:
        log_line = "-"
    storage = st.get("storage") or "-"
    text = fmt.fields(
        [
            ("node", st.get("id", ctx.node.node_id)),
            ("role", st.get("role", "-")),
            ("term", fmt.number(st.get("term"))),
            ("leader", st.get("leader") or "(none known)"),
            ("commit index", fmt.number(st.get("commit_index"))),
            ("applied index", fmt.number(st.get("applied_index"))),
            ("revision", fmt.number(st.get("revision"))),
            ("compact rev", fmt.number(st.get("compact_revision"))),
            ("log length", log_line),
            ("snapshot index", fmt.number(st.get("snapshot_index"))),
            ("storage", "%s, %s" % (storage, fmt.size(st.get("storage_bytes")))),
            ("uptime", fmt.duration(st.get("uptime"))),
        ]
    )
    peers = st.get("peers") or []
    if not peers:
        return text + "\n\npeers: none (single-node cluster)"
    rows = [
        (
            p.get("id", "?"),
            p.get("address") or "-",
            fmt.yes_no(p.get("connected")),
            fmt.number(p.get("match_index")),
            fmt.ago(p.get("last_contact")),
        )
        for p in peers
    ]
    return (
        text
        + "\n\n"
        + fmt.table(("PEER", "ADDRESS", "CONNECTED", "MATCH", "LAST CONTACT"), rows)
    )


@command(
    "members",
    "members",
    "the cluster's members, their roles and the leader",
    """
Lists every member of the cluster configuration as this node knows it:
id, peer address, role (voter or learner), and which one is the leader
and which one is this node.
""",
)
def _members(ctx, args):
    members = ctx.node.members()
    rows = []
    for m in members:
        notes = [n for n, on in (("leader", m.get("is_leader")), ("this node", m.get("is_self"))) if on]
        rows.append((m.get("id", "?"), m.get("address") or "-", m.get("role", "-"), ", ".join(notes)))
    if not rows:
        return "no members known"
    return fmt.table(("ID", "ADDRESS", "ROLE", ""), rows) + "\n(%d member%s)" % (len(rows), "" if len(rows) == 1 else "s")


@command(
    "get",
    "get KEY",
    "read a key (linearizable); get KEY --rev N: as of revision N",
    """
Reads KEY through the replicated path (a linearizable read, like a
client's).  Prints the value, quoted when it has spaces or binary bytes,
or (not found).  With --rev N: the value as of revision N, with its
create and mod revision and version (an error below the compaction point
or above the current revision).
Examples: get user:42    get "a key with spaces"    get x'00ff'    get user:42 --rev 17
""",
    min_args=1,
    max_args=3,
)
def _get(ctx, args):
    if len(args) == 1:
        d = defer.maybeDeferred(ctx.node.get, _key(args[0]))
        return d.addCallback(lambda v: "(not found)" if v is None else quote(v))
    if len(args) != 3 or args[1] != b"--rev":
        raise UsageError("usage: get KEY [--rev N]")
    revision = _revision(args[2], "N")

    def show(kv):
        if kv is None:
            return "(not found at revision %d)" % revision
        return "%s\n(created at revision %d, modified at %d, version %d)" % (
            quote(kv.value), kv.create_revision, kv.mod_revision, kv.version)

    return defer.maybeDeferred(ctx.node.get_kv, _key(args[0]), revision).addCallback(show)


@command(
    "put",
    "put KEY VALUE",
    "write a key through Raft",
    """
Writes VALUE under KEY through the replicated path and waits until the
write is committed and applied; prints the Raft index.  Quote words with
spaces ("a b"), write bytes as \\xNN or the whole word as hex x'00ff'.
Lines are limited to 64 KiB, so use a client for bigger values.
Examples: put greeting "hello world"    put blob x'00ff10'
""",
    min_args=2,
    max_args=2,
)
def _put(ctx, args):
    key, value = _key(args[0]), args[1]
    if len(value) > limits.MAX_VALUE_SIZE:
        raise UsageError("value is %d bytes; the limit is %d" % (len(value), limits.MAX_VALUE_SIZE))
    d = defer.maybeDeferred(ctx.node.put, key, value)
    return d.addCallback(lambda index: "OK (applied at index %s)" % index)


@command(
    "delete",
    "delete KEY",
    "delete a key through Raft",
    """
Deletes KEY through the replicated path; says whether it existed.
Example: delete user:42
""",
    min_args=1,
    max_args=1,
    aliases=("del",),
)
def _delete(ctx, args):
    d = defer.maybeDeferred(ctx.node.delete, _key(args[0]))
    return d.addCallback(lambda existed: "deleted" if existed else "not found (nothing deleted)")


SCAN_DEFAULT_LIMIT = 100
SCAN_MAX_LIMIT = 10000
SCAN_VALUE_WIDTH = 60


@command(
    "scan",
    "scan [PREFIX [LIMIT]]",
    "list keys starting with PREFIX (linearizable)",
    """
Lists the keys that start with PREFIX, in key order, with their values
(long values are cut; use get for the whole value).  At most LIMIT keys,
%d by default, %d at most.  Without PREFIX (or with "") every key.
Examples: scan user:    scan user: 10    scan "" 5
"""
    % (SCAN_DEFAULT_LIMIT, SCAN_MAX_LIMIT),
    max_args=2,
)
def _scan(ctx, args):
    prefix = args[0] if args else b""
    limit = _positive_int(args[1], "LIMIT", SCAN_MAX_LIMIT) if len(args) > 1 else SCAN_DEFAULT_LIMIT
    d = defer.maybeDeferred(ctx.node.scan, prefix, limit)

    def show(pairs):
        pairs = list(pairs)
        if not pairs:
            return "(no keys)" if not prefix else "(no keys start with %s)" % quote(prefix)
        rows = [(quote(k), quote(v, limit=SCAN_VALUE_WIDTH)) for k, v in pairs]
        text = fmt.table(("KEY", "VALUE"), rows)
        if len(pairs) >= limit:
            more = (
                "there may be more: try scan %s %d" % (quote(prefix), min(limit * 10, SCAN_MAX_LIMIT))
                if limit < SCAN_MAX_LIMIT
                else "there may be more: scan a longer prefix"
            )
            return text + "\n(%d keys, the limit; %s)" % (len(pairs), more)
        return text + "\n(%d key%s)" % (len(pairs), "" if len(pairs) == 1 else "s")

    return d.addCallback(show)


@command(
    "stats",
    "stats",
    "request and error counts, latency, batch sizes, fsyncs and their times, GC pauses",
    """
Shows the node's counters since it started: requests and errors by kind,
request latency percentiles (p50, p90, p99, max, in milliseconds), the
mean and largest number of requests per write batch, the number of fsyncs
of the Raft log and their times (total, mean, p99 of the last 1,024,
longest, in milliseconds), and Python's garbage-collector pauses per
generation.
""",
)
def _stats(ctx, args):
    st = dict(ctx.node.stats())
    pairs = []
    for section in ("requests", "errors"):
        counts = st.pop(section, None) or {}
        pairs.append((section, str(sum(counts.values()))))
        pairs.extend(("  " + str(kind), str(n)) for kind, n in sorted(counts.items()))
    latency = st.pop("latency_ms", None) or {}
    pairs.append(
        (
            "latency (ms)",
            "  ".join("%s %s" % (k, fmt.number(latency.get(k))) for k in ("p50", "p90", "p99", "max")),
        )
    )
    batches = st.pop("batch_sizes", None) or {}
    pairs.append(("batch size", "mean %s  max %s" % (fmt.number(batches.get("mean")), fmt.number(batches.get("max")))))
    pairs.append(("fsyncs", fmt.number(st.pop("fsyncs", None))))
    # Whatever else the node reports is shown too, so a new counter needs no
    # change here.
    for name, value in sorted(st.items()):
        pairs.append((str(name), fmt.number(value) if not isinstance(value, dict) else
                      ", ".join("%s %s" % (k, fmt.number(v)) for k, v in sorted(value.items()))))
    return fmt.fields(pairs)


def _members_line(members):
    parts = []
    for m in members:
        label = m["id"] + ("*" if m.get("is_leader") else "")
        if m.get("role") == "learner":
            label += " (learner)"
        parts.append(label)
    return "members: %s   (* leader)" % ", ".join(parts)


@command(
    "add-member",
    "add-member ID HOST:PORT [--learner]",
    "add a node to the cluster (as a learner, promoted once caught up)",
    """
Adds node ID, listening for peers at HOST:PORT, to the cluster.  It joins
as a learner (it receives the log but does not vote, so it cannot hold up
commits while it catches up) and the leader promotes it to voter once it
has caught up.  With --learner it stays a learner until promote.
Start the new node with: twistd -n geocache --id ID --listen tcp:PORT --join <any member>
(--join also asks for the add itself, so this command is optional then).
Runs on the leader; a follower passes it on.
Example: add-member node4 127.0.0.1:50054
""",
    min_args=2,
    max_args=3,
)
def _add_member(ctx, args):
    learner = False
    if len(args) == 3:
        if _text(args[2]) != "--learner":
            raise UsageError("the third word may only be --learner")
        learner = True
    try:
        # Checked here: the node takes the address as it is into the
        # replicated configuration, where every peer will dial it.
        address = format_address(*parse_address(_text(args[1])))
    except ValueError as e:
        raise UsageError(str(e)) from None
    d = defer.maybeDeferred(ctx.node.add_member, _text(args[0]), address, learner)
    return d.addCallback(_members_line)


@command(
    "promote",
    "promote ID",
    "make a caught-up learner a voter",
    """
Turns learner ID into a voting member.  Refused while the learner has not
caught up.  Example: promote node4
""",
    min_args=1,
    max_args=1,
)
def _promote(ctx, args):
    return defer.maybeDeferred(ctx.node.promote, _text(args[0])).addCallback(_members_line)


@command(
    "remove-member",
    "remove-member ID",
    "remove a node from the cluster (the leader too)",
    """
Removes node ID from the configuration, one node at a time.  Removing the
leader works: it hands leadership over, then leaves.  A removed node that
comes back cannot disturb the cluster.  Example: remove-member node3
""",
    min_args=1,
    max_args=1,
)
def _remove_member(ctx, args):
    return defer.maybeDeferred(ctx.node.remove_member, _text(args[0])).addCallback(_members_line)


@command(
    "transfer-leader",
    "transfer-leader ID",
    "hand leadership to another voter",
    """
Brings voter ID up to date, then tells it to campaign at once; clients see
at most a brief pause.  Example: transfer-leader node2
""",
    min_args=1,
    max_args=1,
)
def _transfer_leader(ctx, args):
    return defer.maybeDeferred(ctx.node.transfer_leader, _text(args[0])).addCallback(_members_line)


@command(
    "snapshot",
    "snapshot",
    "compact the Raft log now, keeping the usual overhang",
    """
The state machine (the storage) is the snapshot: this drops the Raft log
up to the applied index minus the overhang kept for slow followers, as
far as the storage is known durable.  Followers further behind get the
snapshot streamed (InstallSnapshot).
""",
)
def _snapshot(ctx, args):
    index = ctx.node.snapshot()
    return "nothing to compact yet" if index is None else "log compacted through index %d" % index


@command(
    "compact",
    "compact [REV]",
    "without REV: drop every log entry safe to drop; with REV: drop the key history below REV",
    """
Without REV: like snapshot, but keeps no overhang: every entry the
storage holds durably is dropped from the Raft log.
With REV: compacts the key space's history through Raft (on every node):
reads of a revision below REV fail with COMPACTED afterwards; the current
values are kept.
Examples: compact    compact 1200
""",
    max_args=1,
)
def _compact(ctx, args):
    if args:
        revision = _revision(args[0])
        d = defer.maybeDeferred(ctx.node.compact_history, revision)
        return d.addCallback(lambda _: "history compacted: reads below revision %d now fail" % revision)
    index = ctx.node.compact()
    return "nothing to compact yet" if index is None else "log compacted through index %d" % index


LOG_LEVELS = ("debug", "info", "warn", "error")


@command(
    "loglevel",
    "loglevel LEVEL",
    "set the node's log level: debug, info, warn or error",
    """
Changes how much the node logs, right away and until it restarts.
LEVEL is one of debug, info, warn, error.
Example: loglevel debug
""",
    min_args=1,
    max_args=1,
)
def _loglevel(ctx, args):
    level = _text(args[0]).lower()
    if level == "warning":
        level = "warn"
    if level not in LOG_LEVELS:
        raise UsageError(
            "unknown log level %s: use one of %s" % (quote(args[0], 40), ", ".join(LOG_LEVELS))
        )
    ctx.node.set_log_level(level)
    return "log level is now %s" % level


def _require_fault_injection(ctx, name):
    if not ctx.node.fault_injection_enabled:
        raise CommandError(
            "%s is a fault-injection command: start the node with "
            "--enable-fault-injection to use it (never in production)" % name
        )


def _peer_ids(ctx):
    try:
        return [p.get("id") for p in ctx.node.status().get("peers") or []]
    except Exception:
        return []


@command(
    "isolate",
    "isolate PEER...",
    "drop all traffic with these peers (fault injection)",
    """
Drops every Raft message to and from the named peers until heal, as if
the network between this node and them were cut.  Only available when
the node was started with --enable-fault-injection.
Example: isolate node2 node3
""",
    min_args=1,
    max_args=None,
)
def _isolate(ctx, args):
    _require_fault_injection(ctx, "isolate")
    peers = [_text(a) for a in args]
    try:
        ctx.node.isolate(peers)
    except KeyError as e:
        known = _peer_ids(ctx)
        raise CommandError(
            "unknown peer %s: the peers are %s"
            % (e.args[0] if e.args else "", ", ".join(known) if known else "(none)")
        ) from None
    except RuntimeError as e:
        raise CommandError(str(e)) from None
    return "isolated: traffic with %s is dropped until heal" % ", ".join(peers)


@command(
    "heal",
    "heal",
    "undo every isolate (fault injection)",
    """
Lets traffic flow again to and from every peer cut off by isolate.
Only available when the node was started with --enable-fault-injection.
""",
)
def _heal(ctx, args):
    _require_fault_injection(ctx, "heal")
    try:
        ctx.node.heal()
    except RuntimeError as e:
        raise CommandError(str(e)) from None
    return "healed: traffic flows to and from every peer"


@command(
    "quit",
    "quit",
    "close this admin session",
    "Ends the session (so do exit and ^D on an empty line).",
    aliases=("exit",),
)
def _quit(ctx, args):
    return Quit("bye")
