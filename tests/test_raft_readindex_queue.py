"""Unit tests of `geocachedb.raft.readindex.ReadIndexQueue`, the leader's
pending linearizable reads (thesis §6.4), apart from the core
(tests/test_raft_readindex.py drives the core's ReadIndex end to end).

The safety rule under test: a read is released only after a quorum of
voters acknowledged a heartbeat round sent *after* the read was registered
(a round's context is the newest sequence number at the time it is sent),
and reads are released in the order they were registered.
"""

from geocachedb.raft.quorum import MajorityConfig
from geocachedb.raft.readindex import ReadIndexQueue, decode_seq, encode_seq

THREE = MajorityConfig(["a", "b", "c"])


def released(queue, voters=THREE):
    return [(r.index, r.requester, r.context) for r in queue.release(voters)]


# ------------------------------------------------------- context coding --

def test_seq_round_trips_through_the_context():
    for seq in (0, 1, 255, 256, 2**40, 2**64 - 1):
        assert decode_seq(encode_seq(seq)) == seq
    assert len(encode_seq(1)) == 8


def test_context_of_the_wrong_length_is_not_a_seq():
    assert decode_seq(b"") is None
    assert decode_seq(b"\x00" * 7) is None
    assert decode_seq(b"\x00" * 9) is None


# ------------------------------------------------------------ registering --

def test_add_numbers_reads_in_order():
    queue = ReadIndexQueue("a")
    assert queue.add(5, "a", b"r1") == 1
    assert queue.add(5, "b", b"r2") == 2
    assert len(queue) == 2


def test_round_context_names_the_newest_read():
    queue = ReadIndexQueue("a")
    assert decode_seq(queue.round_context()) == 0
    queue.add(5, "a", b"r1")
    queue.add(6, "a", b"r2")
    assert decode_seq(queue.round_context()) == 2


# ---------------------------------------------------------------- acking --

def test_ack_reports_only_progress():
    queue = ReadIndexQueue("a")
    queue.add(5, "a", b"r1")
    ctx = queue.round_context()
    assert queue.ack("b", ctx) is True
    assert queue.ack("b", ctx) is False  # a duplicate answer


def test_an_older_round_ack_does_not_lower_a_peers_ack():
    queue = ReadIndexQueue("a")
    queue.add(5, "a", b"r1")
    old = queue.round_context()
    queue.add(5, "a", b"r2")
    new = queue.round_context()
    assert queue.ack("b", new) is True
    assert queue.ack("b", old) is False  # reordered: arrives late
    assert len(released(queue)) == 2


def test_ack_of_a_round_not_yet_sent_is_ignored():
    # A context from the future (another queue, a corrupt message) must not
    # confirm reads that no round has covered.
    queue = ReadIndexQueue("a")
    queue.add(5, "a", b"r1")
    assert queue.ack("b", encode_seq(2)) is False
    assert released(queue) == []
    queue.add(5, "a", b"r2")
    assert released(queue) == []


def test_malformed_or_empty_context_is_ignored():
    queue = ReadIndexQueue("a")
    queue.add(5, "a", b"r1")
    assert queue.ack("b", b"") is False
    assert queue.ack("b", b"junk") is False
    assert queue.ack("b", encode_seq(0)) is False
    assert released(queue) == []


# ------------------------------------------------------------- releasing --

def test_nothing_is_released_before_a_quorum_acks():
    queue = ReadIndexQueue("a")
    queue.add(7, "a", b"r1")
    assert released(queue) == []
    assert len(queue) == 1


def test_leader_plus_one_ack_is_a_quorum_of_three():
    queue = ReadIndexQueue("a")
    queue.add(7, "a", b"r1")
    queue.ack("b", queue.round_context())
    assert released(queue) == [(7, "a", b"r1")]
    assert len(queue) == 0
    assert released(queue) == []


def test_five_voters_need_two_acks_besides_the_leader():
    five = MajorityConfig(["a", "b", "c", "d", "e"])
    queue = ReadIndexQueue("a")
    queue.add(7, "a", b"r1")
    ctx = queue.round_context()
    queue.ack("b", ctx)
    assert released(queue, five) == []
    queue.ack("e", ctx)
    assert released(queue, five) == [(7, "a", b"r1")]


def test_single_voter_leader_releases_at_once():
    queue = ReadIndexQueue("a")
    queue.add(3, "a", b"r1")
    assert released(queue, MajorityConfig(["a"])) == [(3, "a", b"r1")]


def test_a_round_confirms_only_reads_registered_before_it():
    queue = ReadIndexQueue("a")
    queue.add(5, "a", b"early")
    ctx = queue.round_context()
    queue.add(6, "b", b"late")  # registered after the round went out
    queue.ack("b", ctx)
    queue.ack("c", ctx)
    assert released(queue) == [(5, "a", b"early")]
    assert len(queue) == 1
    queue.ack("c", queue.round_context())
    assert released(queue) == [(6, "b", b"late")]


def test_release_hands_back_reads_in_registration_order():
    queue = ReadIndexQueue("a")
    queue.add(5, "b", b"1")
    queue.add(5, "a", b"2")
    queue.add(6, "c", b"3")
    queue.ack("b", queue.round_context())
    assert released(queue) == [(5, "b", b"1"), (5, "a", b"2"), (6, "c", b"3")]


def test_quorum_seq_is_the_majority_ack_not_the_highest():
    queue = ReadIndexQueue("a")
    five = MajorityConfig(["a", "b", "c", "d", "e"])
    queue.add(1, "a", b"1")
    first = queue.round_context()
    queue.add(2, "a", b"2")
    second = queue.round_context()
    queue.ack("b", second)
    queue.ack("c", first)
    # a (leader) and b confirmed both, c only the first: a quorum (3 of 5)
    # confirmed only the first.
    assert released(queue, five) == [(1, "a", b"1")]
    queue.ack("d", second)
    assert released(queue, five) == [(2, "a", b"2")]


def test_duplicate_contexts_are_separate_reads():
    # Two requests may carry the same context (a retried request, two
    # followers' request ids that collide): each is answered.
    queue = ReadIndexQueue("a")
    queue.add(5, "b", b"same")
    queue.add(5, "b", b"same")
    queue.ack("c", queue.round_context())
    assert released(queue) == [(5, "b", b"same"), (5, "b", b"same")]


def test_learner_acks_do_not_confirm_reads():
    queue = ReadIndexQueue("a")
    queue.add(5, "a", b"r1")
    ctx = queue.round_context()
    assert queue.ack("learner", ctx) is True  # recorded, but not a voter
    assert released(queue) == []
    queue.ack("b", ctx)
    assert len(released(queue)) == 1


def test_a_leader_outside_the_config_needs_a_majority_of_the_voters():
    # A removed leader (thesis §4.2.2) still serves reads until it steps
    # down; its own confirmation counts for nothing.
    queue = ReadIndexQueue("a")
    queue.add(5, "a", b"r1")
    ctx = queue.round_context()
    queue.ack("b", ctx)
    assert released(queue, MajorityConfig(["b", "c", "d"])) == []
    queue.ack("c", ctx)
    assert released(queue, MajorityConfig(["b", "c", "d"])) == [(5, "a", b"r1")]


def test_acks_carry_over_to_later_releases():
    # One ack covers every read registered up to its round, however many
    # release calls it takes to notice.
    queue = ReadIndexQueue("a")
    queue.add(5, "a", b"r1")
    queue.ack("b", queue.round_context())
    queue.add(6, "a", b"r2")
    assert released(queue) == [(5, "a", b"r1")]
    queue.ack("c", queue.round_context())
    assert released(queue) == [(6, "a", b"r2")]


# ------------------------------------------------------------ leadership --

def test_clear_returns_every_pending_read_in_order():
    queue = ReadIndexQueue("a")
    queue.add(5, "a", b"1")
    queue.add(6, "b", b"2")
    cleared = [(r.index, r.requester, r.context) for r in queue.clear()]
    assert cleared == [(5, "a", b"1"), (6, "b", b"2")]
    assert len(queue) == 0
    assert released(queue) == []


def test_acks_from_before_a_clear_confirm_no_later_read():
    queue = ReadIndexQueue("a")
    queue.add(5, "a", b"1")
    queue.add(5, "a", b"2")
    queue.ack("b", queue.round_context())
    queue.clear()
    # Neither the numbering nor the acks may let the earlier round confirm
    # a read registered after the clear.
    queue.add(7, "a", b"3")
    assert released(queue) == []
    queue.ack("b", queue.round_context())
    assert released(queue) == [(7, "a", b"3")]


def test_clear_keeps_numbering_so_old_rounds_cannot_confirm_new_reads():
    queue = ReadIndexQueue("a")
    queue.add(5, "a", b"1")
    old = queue.round_context()
    queue.clear()
    queue.add(7, "a", b"2")
    assert decode_seq(queue.round_context()) > decode_seq(old)
    queue.ack("b", old)  # a late answer to the round before the clear
    assert released(queue) == []
