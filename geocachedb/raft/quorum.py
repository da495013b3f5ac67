"""Majority math: which index a quorum has reached, whether an election is
won.  Used by the leader's commit rule, by vote counting and by ReadIndex
(which counts heartbeat acknowledgements the same way it counts matches).

`MajorityConfig` is one set of voters.  Joint consensus (membership changes)
will combine two of them — a `JointConfig` answering the same two questions
with "both majorities agree" — without touching the callers.
"""

VOTE_PENDING = "pending"
VOTE_WON = "won"
VOTE_LOST = "lost"


class MajorityConfig:
    """A set of voter ids; ``voters`` is a sorted tuple so that every
    iteration order is deterministic."""

    __slots__ = ("voters", "_quorum")

    def __init__(self, voters=()):
        self.voters = tuple(sorted(set(voters)))
        self._quorum = len(self.voters) // 2 + 1

    def __contains__(self, node_id):
        return node_id in self.voters

    def __len__(self):
        return len(self.voters)

    @property
    def quorum(self):
        return self._quorum

    def committed_index(self, acked):
        """The largest index that a majority has reached, where
        ``acked[id]`` is what voter ``id`` has reached (missing = 0).  An
        empty configuration commits nothing."""
        voters = self.voters
        if not voters:
            return 0
        if len(voters) == 1:
            return acked.get(voters[0], 0)
        values = sorted([acked.get(v, 0) for v in voters], reverse=True)
        return values[self._quorum - 1]

    def vote_result(self, votes):
        """`VOTE_WON`, `VOTE_LOST` or `VOTE_PENDING` given ``votes[id]`` =
        True (granted) / False (rejected); missing voters have not answered."""
        granted = missing = 0
        for v in self.voters:
            answer = votes.get(v)
            if answer is None:
                missing += 1
            elif answer:
                granted += 1
        if granted >= self._quorum:
            return VOTE_WON
        if granted + missing >= self._quorum:
            return VOTE_PENDING
        return VOTE_LOST

    def __repr__(self):
        return "MajorityConfig(%s)" % ",".join(self.voters)
