"""The core's view of the Raft log: the persisted `IRaftLog` plus the
entries not yet handed to the host for persistence ("unstable").

Data flow: the leader's proposals and a follower's accepted AppendEntries
land here as unstable entries; `Ready.entries` hands them to the host, which
appends and syncs them; `stable_to` (from `advance`) then drops them from the
unstable tail, after which reads come from the `IRaftLog`.  An accepted
AppendEntries may overwrite a suffix that is already persisted: the unstable
tail then starts below the persisted last index and shadows it until the
host's `append` truncates the persisted copy.

Also tracks ``committed`` (known to be on a quorum), ``applied`` (handed
to the state machine and reported done by `advance`) and ``confs``, the
configurations in the log (`ConfHistory`): every append and truncation
passes through here, so the membership in force is always the latest CONF
entry the log holds (thesis §4.1).

Compaction is done by the host on the `IRaftLog` directly (the prefix it
drops is applied, hence persisted and never needed again); `restore` is the
core's side of installing a snapshot newer than the log.
"""

from geocachedb.raft.confchange import ConfHistory

# Entries scanned per call when rebuilding the configuration history.
_SCAN_BYTES = 4 << 20


class LogInvariantError(Exception):
    """The core was asked to do something that would break a Raft safety
    invariant (e.g. truncate a committed entry).  Never caught: a node that
    raises this must stop rather than corrupt data."""


class RaftLog:
    def __init__(self, storage, base_config=None, base_index=0):
        """``base_config`` is the configuration as of ``base_index`` (the
        state machine's applied index); CONF entries after it are read from
        the log."""
        self.storage = storage
        last = storage.last_index()
        # unstable entries are self._unstable; the first has index self._offset
        self._unstable = []
        self._offset = last + 1
        # unstable entries with index <= _handed_out are in a Ready already
        self._handed_out = last
        self.committed = 0
        self.applied = 0
        self.confs = ConfHistory(base_config, base_index)
        lo = max(base_index + 1, storage.first_index())
        while lo <= last:
            batch = storage.entries(lo, last + 1, _SCAN_BYTES)
            self.confs.append(batch)
            lo = batch[-1].index + 1

    # ------------------------------------------------------------- reads --

    def first_index(self):
        return self.storage.first_index()

    def last_index(self):
        if self._unstable:
            return self._offset + len(self._unstable) - 1
        return self.storage.last_index()

    def stable_last_index(self):
        """The last index known durable and still part of the log."""
        if self._unstable:
            return min(self._offset - 1, self.storage.last_index())
        return self.storage.last_index()

    def last_term(self):
        return self.term(self.last_index())

    def term(self, index):
        """Term of the entry at ``index``, or None when it is not in the log
        (beyond the end, or compacted away)."""
        if self._unstable and index >= self._offset:
            pos = index - self._offset
            if pos < len(self._unstable):
                return self._unstable[pos].term
            return None
        try:
            return self.storage.term(index)
        except IndexError:
            return None

    def match_term(self, index, term):
        return self.term(index) == term

    def is_up_to_date(self, last_index, last_term):
        """Raft §5.4.1: a candidate's log is at least as up to date as ours."""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    def entries(self, lo, hi, max_bytes=None):
        """Entries with lo <= index < hi; with ``max_bytes``, as many as fit
        (always at least one)."""
        if lo >= hi:
            return []
        offset = self._offset
        out = []
        if lo < offset:
            stored_hi = min(hi, offset)
            out = self.storage.entries(lo, stored_hi, max_bytes)
            if len(out) < stored_hi - lo or hi <= offset:
                return out
            if max_bytes is not None:
                used = 0
                for e in out:
                    used += len(e.data)
                max_bytes -= used
                if max_bytes <= 0:
                    return out
            lo = offset
        start = lo - offset
        stop = min(hi - offset, len(self._unstable))
        if max_bytes is None:
            out.extend(self._unstable[start:stop])
            return out
        size = 0
        unstable = self._unstable
        for pos in range(start, stop):
            e = unstable[pos]
            size += len(e.data)
            if size > max_bytes and (out or pos > start):
                break
            out.append(e)
        return out

    def find_conflict_by_term(self, index, term):
        """The largest index <= ``index`` whose term is <= ``term``, with
        that term (fast backtracking: every entry between there and
        ``index`` has a term that cannot match).  Stops at the first index
        we know a term for."""
        first = self.first_index() - 1
        while index > first:
            t = self.term(index)
            if t is None:
                # beyond our log: the caller clamps to last_index first
                index -= 1
                continue
            if t <= term:
                return index, t
            index -= 1
        t = self.term(index)
        return index, (t if t is not None else 0)

    # ------------------------------------------------------------ writes --

    def append(self, entries):
        """Append the leader's own new entries (consecutive, after the last)."""
        self._unstable.extend(entries)
        self.confs.append(entries)

    def maybe_append(self, prev_index, prev_term, commit, entries):
        """Follower side of AppendEntries (Raft §5.3).  Returns the index of
        the last entry the message vouches for, or None when the log does
        not match at ``prev_index``."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        # Skip entries we already hold; truncate from the first conflict.
        conflict = 0
        for e in entries:
            if self.term(e.index) != e.term:
                conflict = e.index
                break
        if conflict:
            if conflict <= self.committed:
                raise LogInvariantError(
                    "entry %d conflicts with committed entry (committed=%d)"
                    % (conflict, self.committed))
            self._truncate_and_append(entries[conflict - entries[0].index:])
        self.commit_to(min(commit, last_new))
        return last_new

    def _truncate_and_append(self, entries):
        after = entries[0].index
        self.confs.truncate_from(after)
        self.confs.append(entries)
        end = self._offset + len(self._unstable)
        if after == end:
            self._unstable.extend(entries)
        elif after <= self._offset:
            # Replaces (part of) the persisted log too: the host's append
            # truncates it.
            self._offset = after
            self._unstable = list(entries)
        else:
            del self._unstable[after - self._offset:]
            self._unstable.extend(entries)
        if self._handed_out >= after:
            self._handed_out = after - 1

    def restore(self, index, term, config):
        """The host replaced the log with a snapshot at ``(index, term)``
        (``IRaftLog.reset``): forget the unstable tail, everything up to
        ``index`` is committed and applied."""
        if self.storage.last_index() != index or self.storage.term(index) != term:
            raise LogInvariantError("restore(%d, %d) but the stored log was not reset there"
                                    % (index, term))
        self._unstable = []
        self._offset = index + 1
        self._handed_out = index
        self.committed = index
        self.applied = index
        self.confs.reset(index, config)

    def commit_to(self, index):
        if index > self.committed:
            last = self.last_index()
            self.committed = index if index <= last else last

    # ------------------------------------------------- the Ready protocol --

    def has_unstable(self):
        return bool(self._unstable) and self._offset + len(self._unstable) - 1 > self._handed_out

    def take_unstable(self):
        """The unstable entries not yet handed out in a Ready."""
        unstable = self._unstable
        if not unstable:
            return []
        start = self._handed_out + 1 - self._offset
        if start <= 0:
            out = list(unstable)
        else:
            out = unstable[start:]
        if out:
            self._handed_out = out[-1].index
        return out

    def stable_to(self, index, term):
        """The host persisted entries up to ``index`` (whose term was
        ``term``).  Ignored when the entry was overwritten meanwhile."""
        if not self._unstable or index < self._offset:
            return
        if self.term(index) != term:
            return
        del self._unstable[: index + 1 - self._offset]
        self._offset = index + 1

    def has_next_committed(self):
        return self.committed > self.applied

    def next_committed(self, max_bytes):
        return self.entries(self.applied + 1, self.committed + 1, max_bytes)

    def applied_to(self, index):
        if index > self.applied:
            self.applied = index

    def __repr__(self):
        return "RaftLog(stored=%d..%d, unstable=%d from %d, committed=%d, applied=%d)" % (
            self.storage.first_index(), self.storage.last_index(), len(self._unstable),
            self._offset, self.committed, self.applied)
