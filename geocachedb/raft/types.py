"""Value types shared by the Raft core and everything that stores or carries
its data: log entries and the hard state.

These are plain slotted classes, not protobuf messages: the core creates and
compares many of them, and encoding happens once at the edge
(`geocachedb.wire` for peers, the log store for disk).
"""

# Entry kinds.  NORMAL entries carry an encoded `Command` (or nothing: the
# empty entry a new leader appends); CONF entries carry a configuration
# change (the seam for membership changes).
NORMAL = 0
CONF = 1


class Entry:
    __slots__ = ("index", "term", "kind", "data")

    def __init__(self, index, term, data=b"", kind=NORMAL):
        self.index = index
        self.term = term
        self.data = data
        self.kind = kind

    def __eq__(self, other):
        return (
            isinstance(other, Entry)
            and self.index == other.index
            and self.term == other.term
            and self.kind == other.kind
            and self.data == other.data
        )

    def __hash__(self):
        return hash((self.index, self.term, self.kind, self.data))

    def __repr__(self):
        return "Entry(index=%d, term=%d, kind=%d, %d bytes)" % (
            self.index,
            self.term,
            self.kind,
            len(self.data),
        )


class HardState:
    """What Raft must remember across a crash besides the log."""

    __slots__ = ("term", "vote", "commit")

    def __init__(self, term=0, vote=None, commit=0):
        self.term = term
        self.vote = vote  # a node id (str) or None
        self.commit = commit

    def __eq__(self, other):
        return (
            isinstance(other, HardState)
            and self.term == other.term
            and self.vote == other.vote
            and self.commit == other.commit
        )

    def __repr__(self):
        return "HardState(term=%d, vote=%r, commit=%d)" % (
            self.term,
            self.vote,
            self.commit,
        )
