"""Raft's safety properties, checked continuously while a simulation runs.

The simulator reports what it sees to an `InvariantChecker`: every append to
a node's log (through the `SimDisk` observer), every batch a node applies,
and each node's role, term and commit index after every step.  The checker
keeps a global record and turns any contradiction into a `Violation`:

* election safety — at most one leader per term;
* leader append-only — a leader never overwrites or deletes its own entries;
* log matching — two entries with the same index and term carry the same
  data and follow an entry of the same term; by induction, two logs that
  agree at one (index, term) agree on everything before it;
* no committed entry is ever truncated from a log;
* leader completeness — an entry committed in term T is in the log of every
  leader of a later term;
* state-machine safety — no two nodes commit or apply different entries at
  one index, and each node applies its entries in order, each once;
* promotion — a learner becomes a voter only once its disk holds the log
  up to the configuration change before its promotion;
* (at the end, from `sim`) every acknowledged write is in the committed log
  at the index it was acknowledged with.

Indexes compacted away are skipped, not failed.  A log reset to a snapshot
must not drop a committed entry, and the snapshot's last entry must be the
committed one at its index.
"""

import json

from geocachedb.raft.types import CONF


class Violation:
    __slots__ = ("kind", "time", "message")

    def __init__(self, kind, time, message):
        self.kind = kind
        self.time = time
        self.message = message

    def __str__(self):
        return "[t=%s] %s: %s" % (self.time, self.kind, self.message)

    __repr__ = __str__


def _same(a, b):
    return a.term == b.term and a.kind == b.kind and a.data == b.data


class InvariantChecker:
    def __init__(self, clock, role_of=lambda node_id: None, limit=20,
                 durable_last=lambda node_id: None):
        """``clock()`` gives the current virtual time; ``role_of(node_id)``
        the role of the running core (None when down); ``durable_last(node_id)``
        the last index its disk holds durably (None: unknown)."""
        self._clock = clock
        self._role_of = role_of
        self._durable_last = durable_last
        self.limit = limit
        self.violations = []
        self.leader_of_term = {}  # term -> node id
        self._by_id = {}  # (index, term) -> (kind, data, prev_term)
        self.committed = {}  # index -> Entry (as first seen committed)
        self.commit_term = {}  # index -> term of a leader that had it committed
        self.applied = {}  # index -> Entry (as first applied anywhere)
        self._commit_seen = {}  # node -> highest commit index checked
        self._leaders = {}  # node -> term while we see it as leader
        self._logs = {}  # node -> its log while it leads
        self._installed = {}  # node -> index of its last installed snapshot
        self.max_term = 0
        # The data model's checks (`geocachedb.testing.revisions`), when
        # the simulator attaches them.
        self.revisions = None

    def _fail(self, kind, message):
        if len(self.violations) < self.limit:
            self.violations.append(Violation(kind, self._clock(), message))

    @property
    def ok(self):
        return not self.violations

    # -- the disk observer

    def before_append(self, log, entries):
        node = log.node_id
        first = entries[0].index
        last = log.last_index()
        if first > last:
            return
        new = {e.index: e for e in entries}
        # The appending leader's term is at least that of its newest entry.
        leader_term = max(e.term for e in entries)
        leader = self._role_of(node) == "leader"
        for index in range(first, last + 1):
            old = log.entry(index)
            if old is None:
                continue
            replacement = new.get(index)
            if replacement is not None and _same(old, replacement):
                continue
            if leader:
                self._fail(
                    "leader-append-only",
                    "leader %s (term %s) overwrote its own entry %d (term %d)"
                    % (node, log.hard_state().term, index, old.term),
                )
                leader = False  # one report per append
            committed = self.committed.get(index)
            if committed is not None and _same(committed, old) and not self._stale_leader(
                    index, leader_term):
                self._fail(
                    "committed-entry-lost",
                    "%s truncated committed entry %d (term %d)" % (node, index, old.term),
                )

    def after_append(self, log, entries):
        if self._role_of(log.node_id) == "leader":
            for entry in entries:
                if entry.kind == CONF:
                    self._check_promotion(log, entry)
        for entry in entries:
            try:
                prev_term = log.term(entry.index - 1)
            except IndexError:
                prev_term = None
            key = (entry.index, entry.term)
            seen = self._by_id.get(key)
            if seen is None:
                self._by_id[key] = (entry.kind, entry.data, prev_term)
                continue
            kind, data, seen_prev = seen
            if kind != entry.kind or data != entry.data:
                self._fail(
                    "log-matching",
                    "%s has a different entry at index %d term %d than another log"
                    % (log.node_id, entry.index, entry.term),
                )
            elif prev_term is not None and seen_prev is not None and prev_term != seen_prev:
                self._fail(
                    "log-matching",
                    "%s: entry %d term %d follows term %d here, term %d elsewhere"
                    % (log.node_id, entry.index, entry.term, prev_term, seen_prev),
                )
            elif seen_prev is None and prev_term is not None:
                self._by_id[key] = (kind, data, prev_term)

    def _stale_leader(self, index, leader_term):
        """Whether a leader of (at least) ``leader_term`` may legally
        overwrite the committed entry at ``index`` on a node outside the
        quorum that committed it: a stale leader may, when the entry was
        first committed in a later term (leader completeness binds only
        leaders of terms after the commit).  Such a node, cut off from the
        new term, takes the old leader's entries; it is repaired when it
        hears from the new leader, and the entry stays on a majority."""
        commit_term = self.commit_term.get(index)
        return commit_term is not None and commit_term > leader_term

    def before_reset(self, log, index, term):
        """``log`` is replaced by a snapshot at ``(index, term)``: what it
        holds after ``index`` goes.  None of that may be committed (a
        follower installs a snapshot only when its log does not hold the
        snapshot's last entry, so what follows cannot match the leader's),
        except by a later term than the sender's (see `_stale_leader`; the
        snapshot's term bounds the sender's from below), and the snapshot's
        last entry must be the committed one there."""
        node = log.node_id
        committed = self.committed.get(index)
        if committed is not None and committed.term != term:
            self._fail("snapshot-mismatch",
                       "%s installs a snapshot at %d term %d, but term %d is committed there"
                       % (node, index, term, committed.term))
        for i in range(max(index + 1, log.first_index()), log.last_index() + 1):
            old = log.entry(i)
            known = self.committed.get(i)
            if (old is not None and known is not None and _same(old, known)
                    and not self._stale_leader(i, term)):
                self._fail("committed-entry-lost",
                           "%s drops committed entry %d (term %d) installing a snapshot at %d"
                           % (node, i, old.term, index))
                break

    # -- the state machine observer

    def _check_promotion(self, log, entry):
        """A learner is promoted only once it holds the configuration in
        force before the change (everything up to the entry that added
        it): a voter never starts empty, or a quorum could be formed by
        nodes without the committed entries' data."""
        try:
            change = json.loads(bytes(entry.data)).get("change")
        except ValueError:
            return
        if not change or change[0] != "promote":
            return
        learner = change[1]
        previous = None
        for index in range(entry.index - 1, log.first_index() - 1, -1):
            earlier = log.entry(index)
            if earlier is not None and earlier.kind == CONF:
                previous = index
                break
        has = self._durable_last(learner)
        if previous is not None and has is not None and has < previous:
            self._fail("promotion-not-caught-up",
                       "%s promoted %s at index %d, but its log ends at %d, before the "
                       "configuration change %d" % (log.node_id, learner, entry.index, has, previous))

    def installed(self, node, index):
        """``node``'s state machine was replaced by a snapshot at ``index``
        (its content is the leader's state there, byte for byte: the final
        comparison of the replicas checks the result)."""
        if index < self._installed.get(node, 0):
            self._fail("snapshot-regress", "%s installs a snapshot at %d after one at %d"
                       % (node, index, self._installed[node]))
        self._installed[node] = index

    def applying(self, node, entries, first_expected):
        """``node`` is about to apply ``entries``; ``first_expected`` is the
        index after what its storage already holds."""
        if not entries:
            return
        if entries[0].index != first_expected:
            self._fail(
                "apply-order",
                "%s applies index %d but has applied up to %d"
                % (node, entries[0].index, first_expected - 1),
            )
        for a, b in zip(entries, entries[1:]):
            if b.index != a.index + 1:
                self._fail("apply-order", "%s applies %d after %d" % (node, b.index, a.index))
        for entry in entries:
            seen = self.applied.get(entry.index)
            if seen is None:
                self.applied[entry.index] = entry
            elif not _same(seen, entry):
                self._fail(
                    "state-machine-safety",
                    "%s applies entry %d (term %d) but another node applied term %d there"
                    % (node, entry.index, entry.term, seen.term),
                )
            committed = self.committed.get(entry.index)
            if committed is not None and not _same(committed, entry):
                self._fail(
                    "state-machine-safety",
                    "%s applies entry %d (term %d) but term %d was committed there"
                    % (node, entry.index, entry.term, committed.term),
                )

    # -- after every step of a node

    def observe(self, node, role, term, commit_index, log):
        """Check what a node's core says after a step: role, term, commit."""
        if term > self.max_term:
            self.max_term = term
        if role == "leader":
            other = self.leader_of_term.setdefault(term, node)
            if other != node:
                self._fail(
                    "election-safety",
                    "two leaders in term %d: %s and %s" % (term, other, node),
                )
            if self._leaders.get(node) != term:
                self._leaders[node] = term
                self._check_new_leader(node, term, log)
        else:
            self._leaders.pop(node, None)
            self._logs.pop(node, None)
        seen = self._commit_seen.get(node, 0)
        if commit_index > seen:
            self._commit_seen[node] = commit_index
            for index in range(max(seen + 1, log.first_index()), commit_index + 1):
                entry = log.entry(index)
                if entry is None:
                    continue
                self._committed(node, entry, term if role == "leader" else None)

    def forget(self, node):
        """``node`` crashed: its core's memory is gone."""
        self._commit_seen.pop(node, None)
        self._leaders.pop(node, None)
        self._logs.pop(node, None)

    def wiped(self, node):
        """``node`` is a new machine (its data was deleted)."""
        self.forget(node)
        self._installed.pop(node, None)

    def _committed(self, node, entry, leader_term):
        index = entry.index
        known = self.committed.get(index)
        if known is None:
            self.committed[index] = entry
        elif not _same(known, entry):
            self._fail(
                "state-machine-safety",
                "%s commits entry %d (term %d) but term %d was committed there before"
                % (node, index, entry.term, known.term),
            )
            return
        if leader_term is not None and index not in self.commit_term:
            self.commit_term[index] = leader_term
            # Leader completeness for leaders already elected in later terms.
            for other, term in self._leaders.items():
                if term > leader_term and other != node:
                    self._check_has(other, term, self._log_of(other), index)

    def _check_new_leader(self, node, term, log):
        self._logs[node] = log
        for index, commit_term in self.commit_term.items():
            if commit_term < term:
                self._check_has(node, term, log, index)

    def _check_has(self, node, term, log, index):
        if log is None or index < log.first_index():
            return
        mine = log.entry(index)
        committed = self.committed[index]
        if mine is None or not _same(mine, committed):
            self._fail(
                "leader-completeness",
                "%s leads term %d without entry %d (term %d) committed in term %d"
                % (node, term, index, committed.term, self.commit_term[index]),
            )

    def _log_of(self, node):
        return self._logs.get(node)
