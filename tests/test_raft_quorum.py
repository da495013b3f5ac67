"""Unit tests of `geocachedb.raft.quorum.MajorityConfig`: the majority math
behind the leader's commit rule, vote counting, check-quorum and ReadIndex.

The core relies on three things tested here: ``committed_index`` is the
largest index a majority has reached (and only voters count), a vote is
``won`` exactly when a majority granted and ``lost`` exactly when no
majority can grant any more, and an empty configuration (a blank node
waiting to join) commits nothing and wins nothing.
"""

from hypothesis import given, settings, strategies as st

from geocachedb.raft.quorum import VOTE_LOST, VOTE_PENDING, VOTE_WON, MajorityConfig


# ------------------------------------------------------------ the config --

def test_voters_are_deduplicated_and_sorted():
    config = MajorityConfig(["c", "a", "b", "a"])
    assert config.voters == ("a", "b", "c")
    assert len(config) == 3
    assert "a" in config
    assert "d" not in config


def test_quorum_is_a_strict_majority():
    sizes = {n: MajorityConfig(["n%d" % i for i in range(n)]).quorum for n in range(1, 8)}
    assert sizes == {1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4}


def test_quorum_counts_duplicate_ids_once():
    assert MajorityConfig(["a", "a", "a", "b"]).quorum == 2


# ------------------------------------------------------- committed index --

def test_single_voter_commits_what_it_has():
    assert MajorityConfig(["a"]).committed_index({"a": 7}) == 7


def test_single_voter_that_has_not_acked_commits_nothing():
    assert MajorityConfig(["a"]).committed_index({"b": 7}) == 0


def test_empty_config_commits_nothing():
    assert MajorityConfig().committed_index({"a": 5, "b": 5}) == 0


def test_three_voters_commit_the_median():
    config = MajorityConfig(["a", "b", "c"])
    assert config.committed_index({"a": 10, "b": 7, "c": 3}) == 7
    assert config.committed_index({"a": 3, "b": 10, "c": 7}) == 7


def test_a_voter_missing_from_acked_counts_as_zero():
    config = MajorityConfig(["a", "b", "c"])
    assert config.committed_index({"a": 10, "b": 7}) == 7
    assert config.committed_index({"a": 10}) == 0


def test_four_voters_need_three_to_commit():
    config = MajorityConfig(["a", "b", "c", "d"])
    assert config.committed_index({"a": 9, "b": 9, "c": 4, "d": 1}) == 4
    assert config.committed_index({"a": 9, "b": 9}) == 0


def test_five_voters_commit_the_third_highest():
    config = MajorityConfig(["a", "b", "c", "d", "e"])
    assert config.committed_index({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}) == 3


def test_non_voters_do_not_count_toward_commit():
    # A learner (or a removed node) that is far ahead commits nothing.
    config = MajorityConfig(["a", "b", "c"])
    assert config.committed_index({"a": 5, "learner": 100, "gone": 100}) == 0
    assert config.committed_index({"a": 5, "b": 4, "learner": 100}) == 4


def _brute_force_committed(voters, acked):
    """The definition: the largest i such that at least a majority of the
    voters have acked >= i (0 when none)."""
    if not voters:
        return 0
    quorum = len(voters) // 2 + 1
    best = 0
    for i in set(acked.values()):
        if sum(1 for v in voters if acked.get(v, 0) >= i) >= quorum:
            best = max(best, i)
    return best


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(
    voters=st.sets(st.sampled_from("abcdefg"), max_size=7),
    acked=st.dictionaries(st.sampled_from("abcdefghij"), st.integers(0, 20)),
)
def test_committed_index_matches_the_definition(voters, acked):
    assert MajorityConfig(voters).committed_index(acked) == _brute_force_committed(voters, acked)


# ---------------------------------------------------------------- votes --

def test_single_voter_wins_with_its_own_vote():
    config = MajorityConfig(["a"])
    assert config.vote_result({"a": True}) == VOTE_WON
    assert config.vote_result({}) == VOTE_PENDING
    assert config.vote_result({"a": False}) == VOTE_LOST


def test_three_voters_win_with_two_grants():
    config = MajorityConfig(["a", "b", "c"])
    assert config.vote_result({"a": True}) == VOTE_PENDING
    assert config.vote_result({"a": True, "b": True}) == VOTE_WON
    assert config.vote_result({"a": True, "b": False}) == VOTE_PENDING
    assert config.vote_result({"a": True, "b": False, "c": True}) == VOTE_WON


def test_three_voters_lose_once_two_reject():
    config = MajorityConfig(["a", "b", "c"])
    assert config.vote_result({"a": True, "b": False, "c": False}) == VOTE_LOST
    # Lost as soon as no majority is possible, without waiting for the rest.
    assert config.vote_result({"b": False, "c": False}) == VOTE_LOST


def test_four_voters_split_two_two_is_lost():
    config = MajorityConfig(["a", "b", "c", "d"])
    assert config.vote_result({"a": True, "b": True, "c": False, "d": False}) == VOTE_LOST
    assert config.vote_result({"a": True, "b": True, "c": False}) == VOTE_PENDING
    assert config.vote_result({"a": True, "b": True, "c": True}) == VOTE_WON


def test_votes_of_non_voters_are_ignored():
    config = MajorityConfig(["a", "b", "c"])
    assert config.vote_result({"a": True, "x": True, "y": True}) == VOTE_PENDING
    outsiders = {"x": True, "y": True, "z": True}
    assert config.vote_result({"a": False, "b": False, **outsiders}) == VOTE_LOST


def test_an_answer_of_none_counts_as_missing():
    config = MajorityConfig(["a", "b", "c"])
    assert config.vote_result({"a": True, "b": None, "c": None}) == VOTE_PENDING


def test_empty_config_never_wins_an_election():
    # A blank node (no configuration yet) must not elect itself.
    assert MajorityConfig().vote_result({}) == VOTE_LOST
    assert MajorityConfig().vote_result({"a": True}) == VOTE_LOST


def _brute_force_vote(voters, votes):
    quorum = len(voters) // 2 + 1
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    if granted >= quorum:
        return VOTE_WON
    if len(voters) - rejected >= quorum:
        return VOTE_PENDING
    return VOTE_LOST


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(
    voters=st.sets(st.sampled_from("abcdefg"), max_size=7),
    votes=st.dictionaries(st.sampled_from("abcdefghij"), st.booleans()),
)
def test_vote_result_matches_the_definition(voters, votes):
    assert MajorityConfig(voters).vote_result(votes) == _brute_force_vote(voters, votes)


def test_repr_names_the_voters():
    assert repr(MajorityConfig(["b", "a"])) == "MajorityConfig(a,b)"
