"""The zope interfaces that hold geocachedb's boundaries together.

Everything that has more than one implementation, or that the simulator
replaces, is described here: the key-value storage backends (`IStorage`), the
durable Raft log (`IRaftLog`), the network seen from the server layer
(`IPeerTransport`), the replicated state machine (`IStateMachine`), the
incoming-snapshot spool (`ISnapshotStore`) and the admin shell's view of a
node (`INodeControl`).  Implementations say ``@implementer(...)`` and their tests
call ``verifyObject``.
"""

from zope.interface import Attribute, Interface


class IStorage(Interface):
    """An ordered key-value store that a Raft node applies committed entries to.

    Keys and values are ``bytes``; keys are non-empty and ordered bytewise.
    Every method is synchronous: backends are embedded and a call returns when
    the work is done (and, for writes, durable).  The replicated path only
    ever writes through `apply_batch`, so that the data and the applied index
    move together in one transaction; `put` and `delete` exist for tools and
    tests.
    """

    name = Attribute("The name the backend is registered under, e.g. 'lmdb'.")

    concurrent_writes = Attribute(
        "True when `apply_batch` may run in another thread while this thread "
        "goes on reading (LMDB: MVCC readers never wait for the writer).  "
        "The node then writes its write-behind batches in a background "
        "thread instead of stopping the reactor for the commit."
    )

    def get(key):
        """Return the value stored under ``key``, or None."""

    def put(key, value):
        """Store ``value`` under ``key`` durably.  Empty keys raise ValueError."""

    def delete(key):
        """Remove ``key``; return True if it existed."""

    def scan(start=b"", end=None, prefix=None, limit=None):
        """Return a list of ``(key, value)`` pairs in ascending key order.

        With ``prefix``: the keys that start with it (``start`` and ``end``
        narrow it further when given).  Otherwise the keys in
        ``[start, end)``; ``end=None`` means to the end.  At most ``limit``
        pairs when ``limit`` is not None.
        """

    def apply_batch(puts, deletes, applied_index=None):
        """Apply many writes atomically, durably, in one transaction.

        ``puts`` is an iterable of ``(key, value)``, ``deletes`` an iterable
        of keys; deletes are applied after puts, so a key in both ends up
        deleted.  When ``applied_index`` is given it is recorded in the same
        transaction: after a crash either the whole batch and its index are
        there, or neither is.  Raises ValueError (and changes nothing) when
        any key is empty.
        """

    def applied_index():
        """The index recorded by the last `apply_batch`, 0 for a new store."""

    def snapshot_out():
        """Return an iterator of ``bytes`` chunks: a consistent copy of every
        key, value and the applied index, in the storage-neutral format of
        `geocachedb.storage.snapshot`.  The store may be written while the
        iterator is consumed; the chunks reflect the moment of the call.
        """

    def snapshot_in(chunks):
        """Replace the whole content (and the applied index) with the
        snapshot given as an iterable of ``bytes`` chunks from
        `snapshot_out` of any backend.  Atomic: on a bad snapshot a
        ValueError is raised and the old content stays."""

    def stats():
        """Return a dict with at least ``keys`` (may be an estimate) and
        ``bytes_on_disk`` (0 for in-memory backends)."""

    def close():
        """Release files and locks.  Further calls are errors."""


class IRaftLog(Interface):
    """The durable part of a Raft node: its log entries and hard state.

    Writes (`append`, `set_hard_state`, `compact`) may be buffered; `sync`
    makes every earlier write durable with one fsync, which is how the host
    gets group commit.  Entries are `geocachedb.raft.types.Entry`; the hard
    state is `geocachedb.raft.types.HardState`.

    Index arithmetic: the log holds entries ``first_index() ..
    last_index()``.  After `compact(i, t)` the entry at ``i`` is gone but its
    term is still answered by ``term(i)`` (it is the snapshot's last entry),
    so ``first_index() == i + 1``.  An empty new log has ``first_index() ==
    1`` and ``last_index() == 0`` and ``term(0) == 0``.
    """

    def hard_state():
        """The last hard state set (term, vote, commit)."""

    def set_hard_state(hard_state):
        """Record a new hard state (durable after the next `sync`)."""

    def first_index():
        """Index of the first entry still held."""

    def last_index():
        """Index of the last entry (``first_index() - 1`` when empty)."""

    def term(index):
        """Term of the entry at ``index`` (``first_index()-1 <= index <=
        last_index()``); raises IndexError outside that range."""

    def entries(lo, hi, max_bytes=None):
        """Entries with ``lo <= index < hi``.  With ``max_bytes``, stop once
        the data of the returned entries passes it (always at least one)."""

    def append(entries):
        """Append ``entries`` (consecutive indexes).  When the first index is
        not ``last_index() + 1`` every entry from that index on is dropped
        first (a follower's conflict truncation); the first index must be in
        ``first_index() .. last_index() + 1``."""

    def sync():
        """Make every write so far durable (one fsync of what changed)."""

    def compact(index, term):
        """Drop every entry up to and including ``index`` (which a snapshot
        now covers) and remember ``term`` as its term."""

    def reset(index, term):
        """Drop the whole log and start empty after ``(index, term)``: used
        when a snapshot newer than the log is installed."""

    def stats():
        """A dict with at least ``entries`` and ``bytes_on_disk``."""

    def close():
        """Release files.  Writes not yet synced may be lost."""


class IPeerTransport(Interface):
    """The network as the server layer sees it (`geocachedb.server`): Raft
    messages, and what forwarding to the leader carries.  Every method
    returns at once and never raises for a down peer."""

    def send(message):
        """Queue ``message`` (a `geocachedb.raft.types.Message`) for
        ``message.to``; Raft retransmits what is lost."""

    def can_reach(peer_id):
        """True when something sent to ``peer_id`` now would leave this
        node (connected, not isolated)."""

    def send_proposals(leader_id, commands):
        """Send client writes (encoded Commands) to the leader to propose,
        in as few messages as fit a frame; returns the list of those that
        could not be sent (empty when all went)."""

    def send_forward(peer_id, forward_id, request):
        """Send a whole client `Request` to ``peer_id`` (the leader), to
        be answered with `send_forward_response` under ``forward_id``;
        False when it could not be sent."""

    def send_forward_response(peer_id, forward_id, response):
        """The leader's `Response` to a forwarded request, back to the
        follower that sent it (dropped if it is gone: it times out)."""

    def update_members(addresses, member_ids):
        """The configuration changed: talk to exactly ``member_ids``, at
        ``addresses`` (node id -> HOST:PORT) where known."""

    def connected_peers():
        """The set of peer ids with a live connection."""

    def isolate(peer_ids):
        """Fault injection: drop all traffic to and from ``peer_ids``."""

    def heal():
        """Undo every `isolate`."""


class IStateMachine(Interface):
    """The replicated state as the Raft host (`geocachedb.server.replica`)
    sees it: committed entries in, results out (`KVStateMachine`)."""

    applied_index = Attribute("The index of the last entry applied (memory included).")
    durable_index = Attribute(
        "The highest applied index known to survive an OS crash in storage; "
        "the log is never compacted past it.")

    def apply(entries):
        """Apply committed entries in index order; one result per entry."""

    def configuration():
        """The data of the last CONF entry applied, or None."""

    def snapshot_chunks():
        """The state at the applied index as a snapshot stream (chunks)."""

    def restore(chunks):
        """Replace the whole state with a snapshot stream; ValueError (and
        nothing changed) when it is corrupt."""

    def flush():
        """Write what is applied but only in memory to storage, now."""

    revision = Attribute("The revision of the last change applied (memory included).")
    compact_revision = Attribute("Reads below this revision fail with COMPACTED.")

    def get(key):
        """The current value of user key ``key``, or None."""

    def get_kv(key, revision=0):
        """A user key's `geocachedb.mvcc.KV` as of ``revision`` (0: now),
        or None; raises Compacted / FutureRevision."""

    def range(request, out):
        """Serve a `RangeRequest` into the `RangeResponse` ``out``."""

    def scan(start=b"", end=None, prefix=None, limit=None):
        """``[(key, value)]`` of the user keys as of the applied index."""


class ISnapshotStore(Interface):
    """Where a follower spools an incoming snapshot (see module docs)."""

    def begin(meta):
        """Start spooling a new incoming snapshot (`SnapshotMeta`, recorded
        durably); a partial one is dropped.  The completed one, if any, is
        kept."""

    def write(data):
        """Append the next chunk (bytes) of the incoming snapshot."""

    def finish():
        """The incoming snapshot is complete: make it durable and the
        completed one, atomically replacing an older completed one."""

    def abort():
        """Drop the partial incoming snapshot and its metadata (never the
        completed one)."""

    def incoming():
        """The `SnapshotMeta` given to the last `begin` that was neither
        finished nor aborted, or None; it survives a crash, the partial data
        does not (a new incarnation cannot continue it)."""

    def completed():
        """The `SnapshotMeta` of the completed snapshot, or None."""

    def chunks():
        """The completed snapshot's bytes as an iterable of chunks; each
        iteration starts over (so a storage may retry its load)."""

    def release():
        """Forget the completed snapshot (its install is durable)."""


class INodeControl(Interface):
    """What the admin shell (and tools) may do with a running node.

    Implemented by the node service (`geocachedb.node`); the admin shell
    only talks to this, so it is tested against a fake.  Methods returning
    Deferreds go through the same replicated path as client requests and
    fail with `geocachedb.errors.GeoCacheError` subclasses.
    """

    node_id = Attribute("This node's id (str).")
    fault_injection_enabled = Attribute("True when started with --enable-fault-injection.")

    def status():
        """A dict: ``id, role, term, leader, commit_index, applied_index,
        log_first_index, log_last_index, snapshot_index, revision,
        compact_revision, storage, storage_bytes, uptime`` (seconds,
        float) and ``peers``: a list of
        dicts ``id, address, connected, match_index, last_contact``
        (seconds ago, float or None)."""

    def members():
        """A list of dicts ``id, address, role`` ('voter' or 'learner'),
        ``is_leader`` (bool), ``is_self`` (bool)."""

    def stats():
        """A dict of counters and figures: ``requests`` and ``errors`` (dicts
        kind -> count), ``latency_ms`` (dict p50/p90/p99/max), ``batch_sizes``
        (dict mean/max), ``fsyncs`` (int)."""

    def get(key):
        """Deferred firing with the value (bytes) or None; linearizable."""

    def get_kv(key, revision=0):
        """Deferred firing with the key's `geocachedb.client.KeyValue` as
        of ``revision`` (0: now) or None; linearizable; fails with
        Compacted / FutureRevision."""

    def compact_history(revision):
        """Deferred firing with None once the key history below
        ``revision`` is compacted (through Raft, on every node)."""

    def put(key, value):
        """Deferred firing with the Raft index when the write is applied."""

    def delete(key):
        """Deferred firing with True when the key existed."""

    def scan(prefix, limit):
        """Deferred firing with a list of (key, value) pairs; linearizable."""

    def set_log_level(level):
        """Set the node's log level ('debug', 'info', 'warn', 'error')."""

    def isolate(peer_ids):
        """Drop all peer traffic to and from ``peer_ids`` (fault injection
        only; raises RuntimeError when not enabled, KeyError for an unknown
        peer)."""

    def heal():
        """Undo every `isolate`."""

    def add_member(node_id, address, learner=False):
        """Deferred firing with `members()` once ``node_id`` (at
        ``address``) is in the configuration: as a learner, promoted once
        caught up unless ``learner``."""

    def promote(node_id):
        """Deferred: a caught-up learner becomes a voter."""

    def remove_member(node_id):
        """Deferred: ``node_id`` leaves the configuration."""

    def transfer_leader(node_id):
        """Deferred firing once ``node_id`` leads."""

    def snapshot():
        """Compact the Raft log now (keeping the overhang); the new
        snapshot index, or None when there is nothing to drop."""

    def compact():
        """Compact without overhang; the new snapshot index or None."""
