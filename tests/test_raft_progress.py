"""Unit tests of `geocachedb.raft.progress`: the inflight window
(`Inflights`), one follower's replication state (`Progress`: probe,
replicate and snapshot, and the rules that pause sending), the membership
value (`ClusterConfig`) and the leader's `ProgressTracker`.

The core relies on: a paused peer gets no AppendEntries (one probe at a
time, a full window, or a snapshot in progress); ``next`` never drops
below ``match + 1``; a stale answer (to something already moved past) is
ignored; and the tracker's quorum questions count voters only.
"""

import pytest

from geocachedb.raft.progress import (
    PROBE,
    REPLICATE,
    SNAPSHOT,
    ClusterConfig,
    Inflights,
    Progress,
    ProgressTracker,
)
from geocachedb.raft.quorum import VOTE_LOST, VOTE_PENDING, VOTE_WON


def replicating(match, max_inflight=4):
    """A Progress in replicate state whose log matches up to ``match``."""
    pr = Progress(match + 1, max_inflight)
    pr.maybe_update(match)
    pr.become_replicate()
    return pr


# ------------------------------------------------------------- Inflights --

def test_inflights_is_full_at_capacity():
    inflights = Inflights(3)
    for last in (5, 7, 9):
        assert not inflights.full()
        inflights.add(last)
    assert inflights.full()
    assert inflights.count() == 3


def test_inflights_free_le_frees_every_message_up_to_the_index():
    inflights = Inflights(4)
    for last in (5, 7, 9, 11):
        inflights.add(last)
    inflights.free_le(7)
    assert inflights.count() == 2
    assert not inflights.full()
    # Between two messages' last indexes: frees only the earlier one.
    inflights.free_le(10)
    assert inflights.count() == 1
    inflights.free_le(11)
    assert inflights.count() == 0


def test_inflights_free_le_below_the_first_message_frees_nothing():
    inflights = Inflights(4)
    inflights.add(5)
    inflights.add(8)
    inflights.free_le(4)
    assert inflights.count() == 2


def test_inflights_free_le_on_empty_window_is_a_no_op():
    inflights = Inflights(2)
    inflights.free_le(100)
    assert inflights.count() == 0


def test_inflights_stays_correct_over_many_cycles():
    # The window is reused for the whole life of a leader: fill and free it
    # many times over (a ring buffer's wraparound would hide bugs here).
    inflights = Inflights(3)
    last = 0
    for _ in range(50):
        while not inflights.full():
            last += 2
            inflights.add(last)
        assert inflights.count() == 3
        inflights.free_le(last - 4)  # the oldest of the three
        assert inflights.count() == 2
    inflights.free_le(last)
    assert inflights.count() == 0


def test_inflights_reset_empties_the_window():
    inflights = Inflights(2)
    inflights.add(1)
    inflights.add(2)
    inflights.reset()
    assert inflights.count() == 0
    assert not inflights.full()


def test_inflights_of_capacity_one_allows_one_message():
    inflights = Inflights(1)
    assert not inflights.full()
    inflights.add(3)
    assert inflights.full()


# ------------------------------------------------------- Progress: state --

def test_new_progress_probes_from_next():
    pr = Progress(11, 4)
    assert pr.state == PROBE
    assert (pr.match, pr.next) == (0, 11)
    assert not pr.is_paused()
    assert not pr.is_learner


def test_become_replicate_streams_from_match_plus_one():
    pr = Progress(11, 4)
    pr.maybe_update(6)
    pr.become_replicate()
    assert pr.state == REPLICATE
    assert pr.next == 7
    assert pr.inflights.count() == 0


def test_become_probe_from_replicate_restarts_after_match():
    pr = replicating(5)
    pr.sent_entries(8)
    pr.sent_entries(10)
    pr.become_probe()
    assert pr.state == PROBE
    assert pr.next == 6
    assert pr.inflights.count() == 0
    assert not pr.is_paused()


def test_become_probe_after_snapshot_resumes_after_the_snapshot():
    pr = replicating(5)
    pr.become_snapshot(20)
    assert pr.state == SNAPSHOT
    assert pr.pending_snapshot == 20
    pr.become_probe()
    assert pr.state == PROBE
    assert pr.next == 21
    assert pr.pending_snapshot == 0


def test_become_probe_after_a_snapshot_never_chosen_resumes_after_match():
    pr = replicating(5)
    pr.become_snapshot(0)
    pr.become_probe()
    assert pr.next == 6


def test_become_probe_after_snapshot_keeps_a_match_beyond_the_snapshot():
    pr = replicating(5)
    pr.become_snapshot(3)
    pr.become_probe()
    assert pr.next == 6


def test_become_snapshot_clears_the_window():
    pr = replicating(5)
    pr.sent_entries(9)
    pr.become_snapshot(0)
    assert pr.inflights.count() == 0


# ------------------------------------------------------- Progress: pause --

def test_probe_pauses_after_one_message_until_an_answer():
    pr = Progress(6, 4)
    pr.sent_entries(8)
    assert pr.is_paused()
    # A probe does not advance next optimistically: the answer decides.
    assert pr.next == 6
    pr.maybe_update(8)
    assert not pr.is_paused()


def test_probe_pauses_after_an_empty_probe_too():
    pr = Progress(6, 4)
    pr.sent_entries(5)  # no entries: last_index = prev index
    assert pr.is_paused()


def test_replicate_pauses_only_when_the_window_is_full():
    pr = replicating(5, max_inflight=2)
    pr.sent_entries(7)
    assert not pr.is_paused()
    pr.sent_entries(9)
    assert pr.is_paused()
    pr.maybe_update(7)
    pr.inflights.free_le(7)  # the core frees the window on the answer
    assert not pr.is_paused()


def test_snapshot_state_is_always_paused():
    pr = replicating(5)
    pr.become_snapshot(10)
    assert pr.is_paused()
    pr.maybe_update(7)
    assert pr.is_paused()


def test_become_replicate_and_become_probe_unpause():
    pr = Progress(6, 4)
    pr.sent_entries(5)
    pr.become_replicate()
    assert not pr.is_paused()
    pr.sent_entries(5)
    pr.become_probe()
    assert not pr.is_paused()


# ---------------------------------------------- Progress: sent_entries --

def test_replicate_advances_next_optimistically_and_records_the_message():
    pr = replicating(5)
    pr.sent_entries(9)
    assert pr.next == 10
    assert pr.inflights.count() == 1
    pr.sent_entries(12)
    assert pr.next == 13
    assert pr.inflights.count() == 2


def test_replicate_one_entry_message_takes_a_window_slot():
    pr = replicating(5)
    pr.sent_entries(6)  # exactly the entry at next
    assert pr.next == 7
    assert pr.inflights.count() == 1


def test_replicate_empty_message_takes_no_window_slot():
    pr = replicating(5)
    pr.sent_entries(5)  # an empty AppendEntries at prev = next - 1
    assert pr.next == 6
    assert pr.inflights.count() == 0


# ---------------------------------------------- Progress: maybe_update --

def test_maybe_update_reports_news_only():
    pr = Progress(1, 4)
    assert pr.maybe_update(4) is True
    assert pr.match == 4
    assert pr.maybe_update(4) is False
    assert pr.maybe_update(2) is False
    assert pr.match == 4


def test_maybe_update_moves_next_past_match():
    pr = Progress(3, 4)
    pr.maybe_update(7)
    assert pr.next == 8


def test_maybe_update_at_next_moves_next_one_past_it():
    pr = Progress(4, 4)
    pr.maybe_update(4)
    assert pr.next == 5


def test_maybe_update_never_moves_next_back():
    pr = replicating(5)
    pr.sent_entries(12)
    pr.maybe_update(8)
    assert (pr.match, pr.next) == (8, 13)


def test_maybe_update_with_stale_index_leaves_probe_paused():
    pr = Progress(6, 4)
    pr.maybe_update(5)
    pr.sent_entries(8)
    assert pr.maybe_update(3) is False
    assert pr.is_paused()


# --------------------------------------------- Progress: maybe_decr_to --

def test_replicate_rejection_above_match_falls_back_to_match_plus_one():
    pr = replicating(5)
    pr.sent_entries(9)
    pr.sent_entries(12)
    assert pr.maybe_decr_to(9, 3) is True
    assert pr.next == 6


def test_replicate_rejection_at_or_below_match_is_stale():
    pr = replicating(5)
    pr.sent_entries(9)
    assert pr.maybe_decr_to(5, 2) is False
    assert pr.maybe_decr_to(4, 2) is False
    assert pr.next == 10


def test_probe_rejection_uses_the_hint():
    pr = Progress(11, 4)  # probing with prev index 10
    pr.sent_entries(10)
    assert pr.maybe_decr_to(10, 4) is True
    assert pr.next == 5
    assert not pr.is_paused()


def test_probe_rejection_steps_back_at_least_one():
    # A hint at or above the rejected index cannot move next forward.
    pr = Progress(11, 4)
    assert pr.maybe_decr_to(10, 10) is True
    assert pr.next == 10
    pr = Progress(11, 4)
    assert pr.maybe_decr_to(10, 50) is True
    assert pr.next == 10


def test_probe_rejection_never_goes_below_match_plus_one():
    pr = Progress(11, 4)
    pr.maybe_update(3)
    pr.next = 11
    assert pr.maybe_decr_to(10, 0) is True
    assert pr.next == 4


def test_probe_rejection_of_an_older_probe_is_stale():
    pr = Progress(11, 4)
    pr.sent_entries(10)
    assert pr.maybe_decr_to(7, 2) is False
    assert pr.next == 11
    assert pr.is_paused()


def test_repeated_rejections_walk_back_to_the_match():
    # Without hints (hint = rejected - 1), each rejection steps back one.
    pr = Progress(6, 4)
    seen = []
    while True:
        rejected = pr.next - 1
        if rejected == 2:  # the follower's log matches at 2
            break
        pr.sent_entries(rejected)
        assert pr.maybe_decr_to(rejected, rejected - 1)
        seen.append(pr.next)
    assert seen == [5, 4, 3]


# ---------------------------------------------------------- ClusterConfig --

def test_cluster_config_drops_learners_that_are_voters():
    config = ClusterConfig(["b", "a"], learners=["c", "a"])
    assert config.voters.voters == ("a", "b")
    assert config.learners == ("c",)
    assert config.ids() == ("a", "b", "c")
    assert "c" in config and "a" in config and "z" not in config


def test_cluster_config_keeps_only_members_known_addresses():
    config = ClusterConfig(["a"], ["b"], {"a": "h:1", "b": "", "gone": "h:3"})
    assert config.addresses == {"a": "h:1"}


def test_cluster_config_equality_covers_voters_learners_and_addresses():
    base = ClusterConfig(["a", "b"], ["c"], {"a": "h:1"})
    assert base == ClusterConfig(["b", "a"], ["c"], {"a": "h:1"})
    assert base != ClusterConfig(["a", "b"], [], {"a": "h:1"})
    assert base != ClusterConfig(["a", "b", "c"], [], {"a": "h:1"})
    assert base != ClusterConfig(["a", "b"], ["c"], {"a": "h:2"})
    assert base != "not a config"


def test_cluster_config_is_unhashable():
    with pytest.raises(TypeError):
        hash(ClusterConfig(["a"]))


# --------------------------------------------------------- ProgressTracker --

def tracker(voters=("a", "b", "c"), learners=(), self_id="a", max_inflight=4):
    return ProgressTracker(ClusterConfig(voters, learners), max_inflight, self_id)


def test_tracker_has_one_probing_progress_per_member():
    tr = tracker(learners=["l"])
    assert sorted(tr.progress) == ["a", "b", "c", "l"]
    assert all(pr.state == PROBE and pr.next == 1 for pr in tr.progress.values())
    assert tr.get("l").is_learner
    assert not tr.get("b").is_learner
    assert tr.get("zz") is None
    assert tr.is_voter("b") and not tr.is_voter("l")


def test_tracker_reset_starts_everyone_over_at_next_index():
    tr = tracker()
    tr.get("b").maybe_update(5)
    tr.reset(9)
    assert tr.get("b").match == 0
    assert tr.get("b").next == 9


def test_tracker_keeps_a_progress_for_self_outside_the_config():
    # Thesis §4.2.2: a leader removed from the configuration still leads it
    # until the change commits, and counts its own log only as a non-voter.
    tr = tracker(voters=("b", "c"), self_id="a")
    assert "a" in tr.progress
    tr.get("a").maybe_update(10)
    tr.get("b").maybe_update(3)
    tr.get("c").maybe_update(2)
    # Both remaining voters are needed; counting "a" would make it 3.
    assert tr.committed() == 2


def test_tracker_committed_counts_voter_matches_only():
    tr = tracker(learners=["l"])
    tr.get("a").maybe_update(8)
    tr.get("l").maybe_update(8)
    assert tr.committed() == 0
    tr.get("c").maybe_update(5)
    assert tr.committed() == 5


def test_tracker_set_config_keeps_progress_of_members_that_stay():
    tr = tracker(learners=["l"])
    tr.get("b").maybe_update(6)
    tr.get("b").become_replicate()
    tr.get("l").maybe_update(4)
    # Promote l, remove c, add d.
    tr.set_config(ClusterConfig(["a", "b", "l", "d"]), 20)
    assert sorted(tr.progress) == ["a", "b", "d", "l"]
    assert tr.get("b").state == REPLICATE and tr.get("b").match == 6
    assert tr.get("l").match == 4 and not tr.get("l").is_learner
    assert tr.get("d").state == PROBE and tr.get("d").next == 20 and tr.get("d").match == 0
    assert tr.get("c") is None
    assert tr.ids == ("a", "b", "d", "l")


def test_tracker_set_config_marks_a_demoted_member_as_learner():
    tr = tracker()
    tr.set_config(ClusterConfig(["a", "b"], ["c"]), 5)
    assert tr.get("c").is_learner
    assert not tr.is_voter("c")


def test_tracker_set_config_keeps_self_when_removed():
    tr = tracker()
    tr.get("a").maybe_update(9)
    tr.set_config(ClusterConfig(["b", "c"]), 10)
    assert tr.get("a").match == 9
    assert tr.ids == ("b", "c")


def test_tracker_set_config_drops_votes_of_removed_voters():
    tr = tracker()
    tr.record_vote("a", True)
    tr.record_vote("c", True)
    tr.set_config(ClusterConfig(["a", "b", "d"]), 5)
    assert tr.votes == {"a": True}
    assert tr.tally_votes() == VOTE_PENDING


def test_tracker_first_vote_of_a_node_counts():
    tr = tracker()
    tr.record_vote("b", False)
    tr.record_vote("b", True)  # a duplicate, e.g. a retried request
    assert tr.votes == {"b": False}


def test_tracker_tally_wins_with_a_majority_of_voters():
    tr = tracker(learners=["l"])
    tr.record_vote("a", True)
    assert tr.tally_votes() == VOTE_PENDING
    tr.record_vote("l", True)  # a learner's grant is worth nothing
    assert tr.tally_votes() == VOTE_PENDING
    tr.record_vote("b", True)
    assert tr.tally_votes() == VOTE_WON


def test_tracker_tally_loses_when_a_majority_rejects():
    tr = tracker()
    tr.record_vote("a", True)
    tr.record_vote("b", False)
    tr.record_vote("c", False)
    assert tr.tally_votes() == VOTE_LOST
    tr.reset_votes()
    assert tr.votes == {}
    assert tr.tally_votes() == VOTE_PENDING


def test_tracker_quorum_active_needs_a_majority_of_voters_heard_from():
    tr = tracker(learners=["l"])
    tr.get("a").recent_active = True
    tr.get("l").recent_active = True
    assert not tr.quorum_active()
    tr.get("c").recent_active = True
    assert tr.quorum_active()


def test_tracker_quorum_active_does_not_count_a_removed_self():
    tr = tracker(voters=("b", "c", "d"), self_id="a")
    tr.get("a").recent_active = True
    tr.get("b").recent_active = True
    assert not tr.quorum_active()
