"""The linearizability checker must tell linearizable histories from the
rest: hand-made histories of each kind of anomaly, and a property test that
any history cut from a real sequential execution passes."""

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from geocachedb.testing.linearizability import (
    DELETE,
    GET,
    PUT,
    History,
    Operation,
    check,
)


def put(client, key, value, call, ret):
    return Operation(client, PUT, key, value, call=call, ret=ret)


def get(client, key, output, call, ret):
    return Operation(client, GET, key, output=output, call=call, ret=ret)


def delete(client, key, existed, call, ret):
    return Operation(client, DELETE, key, output=existed, call=call, ret=ret)


class SequentialHistories(SynchronousTestCase):
    def test_empty_history_is_linearizable(self):
        self.assertTrue(check([]).ok)

    def test_read_of_absent_key_returns_none(self):
        self.assertTrue(check([get(1, b"k", None, 0, 1)]).ok)

    def test_read_after_write_sees_it(self):
        self.assertTrue(check([put(1, b"k", b"a", 0, 1), get(2, b"k", b"a", 2, 3)]).ok)

    def test_stale_read_is_rejected(self):
        history = [
            put(1, b"k", b"a", 0, 1),
            put(1, b"k", b"b", 2, 3),
            get(2, b"k", b"a", 4, 5),
        ]
        result = check(history)
        self.assertIs(result.ok, False)
        self.assertEqual(result.key, b"k")
        self.assertIn("get(b'k') -> b'a'", result.explanation)

    def test_lost_write_is_rejected(self):
        # An acknowledged write that a later read does not see.
        history = [
            put(1, b"k", b"a", 0, 1),
            get(2, b"k", None, 2, 3),
        ]
        self.assertIs(check(history).ok, False)

    def test_read_of_value_never_written_is_rejected(self):
        history = [put(1, b"k", b"a", 0, 1), get(2, b"k", b"zzz", 2, 3)]
        result = check(history)
        self.assertIs(result.ok, False)
        self.assertIn("b'zzz'", result.explanation)

    def test_value_flipping_back_is_rejected(self):
        # Two reads after both writes completed cannot see different values.
        history = [
            put(1, b"k", b"a", 0, 1),
            put(2, b"k", b"b", 2, 3),
            get(3, b"k", b"b", 4, 5),
            get(3, b"k", b"a", 6, 7),
        ]
        self.assertIs(check(history).ok, False)


class ConcurrentHistories(SynchronousTestCase):
    def test_overlapping_write_and_read_may_see_either_value(self):
        for seen in (b"a", b"b"):
            history = [
                put(1, b"k", b"a", 0, 1),
                put(2, b"k", b"b", 2, 10),
                get(3, b"k", seen, 3, 4),
            ]
            self.assertTrue(check(history).ok, seen)

    def test_concurrent_writes_may_be_ordered_either_way(self):
        for last in (b"a", b"b"):
            history = [
                put(1, b"k", b"a", 0, 5),
                put(2, b"k", b"b", 1, 6),
                get(3, b"k", last, 7, 8),
            ]
            self.assertTrue(check(history).ok, last)

    def test_reads_must_agree_on_one_order_of_concurrent_writes(self):
        # Reader 3 sees b then a; reader 4 sees a then b, all after both
        # writes finished the reads would have to agree; here the reads are
        # concurrent with the writes, but each reader's two reads are
        # sequential, so the writes would have to be ordered both ways.
        history = [
            put(1, b"k", b"a", 0, 100),
            put(2, b"k", b"b", 0, 100),
            get(3, b"k", b"b", 10, 11),
            get(3, b"k", b"a", 12, 13),
            get(4, b"k", b"a", 10, 11),
            get(4, b"k", b"b", 12, 13),
        ]
        self.assertIs(check(history).ok, False)

    def test_read_concurrent_with_write_then_older_value_is_rejected(self):
        # Once a read has returned the new value, a later read may not go
        # back to the old one, even while the write is still in flight.
        history = [
            put(1, b"k", b"a", 0, 1),
            put(2, b"k", b"b", 2, 20),
            get(3, b"k", b"b", 3, 4),
            get(4, b"k", b"a", 5, 6),
        ]
        self.assertIs(check(history).ok, False)

    def test_keys_are_independent(self):
        history = [
            put(1, b"x", b"1", 0, 1),
            put(1, b"y", b"2", 2, 3),
            get(2, b"y", b"2", 4, 5),
            get(2, b"x", b"1", 6, 7),
        ]
        result = check(history)
        self.assertTrue(result.ok)
        self.assertEqual(set(result.linearization), {b"x", b"y"})

    def test_failure_names_the_offending_key_only(self):
        history = [
            put(1, b"good", b"1", 0, 1),
            get(2, b"good", b"1", 2, 3),
            put(1, b"bad", b"1", 0, 1),
            get(2, b"bad", b"2", 2, 3),
        ]
        result = check(history)
        self.assertIs(result.ok, False)
        self.assertEqual(result.key, b"bad")
        self.assertTrue(all(op.key == b"bad" for op in result.ops))


class UnknownOutcomes(SynchronousTestCase):
    def test_unknown_write_may_be_observed(self):
        history = [
            put(1, b"k", b"a", 0, None),
            get(2, b"k", b"a", 5, 6),
        ]
        self.assertTrue(check(history).ok)

    def test_unknown_write_may_never_be_observed(self):
        history = [
            put(1, b"k", b"a", 0, None),
            get(2, b"k", None, 5, 6),
            get(2, b"k", None, 7, 8),
        ]
        self.assertTrue(check(history).ok)

    def test_unknown_write_may_take_effect_long_after(self):
        history = [
            put(1, b"k", b"a", 0, None),
            get(2, b"k", None, 5, 6),
            put(3, b"k", b"b", 7, 8),
            get(2, b"k", b"a", 9, 10),
        ]
        self.assertTrue(check(history).ok)

    def test_unknown_write_cannot_take_effect_before_invocation(self):
        history = [
            get(2, b"k", b"a", 0, 1),
            put(1, b"k", b"a", 5, None),
        ]
        self.assertIs(check(history).ok, False)

    def test_unknown_write_cannot_be_observed_then_unobserved(self):
        # Once seen, a write has happened; a later read cannot miss it
        # unless another write replaced it.
        history = [
            put(1, b"k", b"a", 0, None),
            get(2, b"k", b"a", 5, 6),
            get(2, b"k", None, 7, 8),
        ]
        self.assertIs(check(history).ok, False)

    def test_unknown_write_takes_effect_at_most_once(self):
        history = [
            put(1, b"k", b"a", 0, None),
            get(2, b"k", b"a", 1, 2),
            put(3, b"k", b"b", 3, 4),
            get(2, b"k", b"b", 5, 6),
            get(2, b"k", b"a", 7, 8),
        ]
        self.assertIs(check(history).ok, False)

    def test_unknown_delete_may_or_may_not_happen(self):
        for seen in (b"a", None):
            history = [
                put(1, b"k", b"a", 0, 1),
                Operation(2, DELETE, b"k", call=2, ret=None),
                get(3, b"k", seen, 5, 6),
            ]
            self.assertTrue(check(history).ok, seen)


class DeleteSemantics(SynchronousTestCase):
    def test_delete_of_existing_key_reports_true(self):
        history = [
            put(1, b"k", b"a", 0, 1),
            delete(1, b"k", True, 2, 3),
            get(1, b"k", None, 4, 5),
        ]
        self.assertTrue(check(history).ok)

    def test_delete_of_absent_key_reports_false(self):
        self.assertTrue(check([delete(1, b"k", False, 0, 1)]).ok)

    def test_delete_claiming_existence_of_absent_key_is_rejected(self):
        self.assertIs(check([delete(1, b"k", True, 0, 1)]).ok, False)

    def test_delete_missing_an_acknowledged_write_is_rejected(self):
        history = [put(1, b"k", b"a", 0, 1), delete(2, b"k", False, 2, 3)]
        self.assertIs(check(history).ok, False)

    def test_two_deletes_cannot_both_remove_one_value(self):
        history = [
            put(1, b"k", b"a", 0, 1),
            delete(2, b"k", True, 2, 5),
            delete(3, b"k", True, 2, 5),
        ]
        self.assertIs(check(history).ok, False)

    def test_concurrent_deletes_one_wins(self):
        history = [
            put(1, b"k", b"a", 0, 1),
            delete(2, b"k", True, 2, 5),
            delete(3, b"k", False, 2, 5),
        ]
        self.assertTrue(check(history).ok)

    def test_read_after_delete_sees_nothing(self):
        history = [
            put(1, b"k", b"a", 0, 1),
            delete(1, b"k", True, 2, 3),
            get(2, b"k", b"a", 4, 5),
        ]
        self.assertIs(check(history).ok, False)


class Recorder(SynchronousTestCase):
    def test_history_records_pending_as_unknown_and_drops_failed(self):
        history = History()
        a = history.invoke(1, PUT, b"k", b"a", time=0)
        history.complete(a, None, time=1)
        b = history.invoke(2, PUT, b"k", b"b", time=2)  # never completes
        c = history.invoke(3, GET, b"k", time=3)
        history.fail(c)
        d = history.invoke(3, GET, b"k", time=4)
        history.complete(d, b"b", time=5)
        self.assertEqual(len(history), 3)
        self.assertTrue(history.get(b).unknown)
        self.assertTrue(check(history).ok)

    def test_search_gives_up_when_budget_runs_out(self):
        ops = [put(n, b"k", bytes([n]), 0, 100) for n in range(12)]
        ops.append(get(99, b"k", b"nope", 101, 102))
        result = check(ops, max_steps=50)
        self.assertIsNone(result.ok)

    def test_many_concurrent_writes_are_checked_quickly(self):
        # Memoisation keeps 14 fully concurrent writes tractable (14! orders
        # without it).
        ops = [put(n, b"k", bytes([n]), 0, 100) for n in range(14)]
        ops.append(get(99, b"k", bytes([7]), 101, 102))
        self.assertTrue(check(ops).ok)
        ops[-1] = get(99, b"k", b"nope", 101, 102)
        self.assertIs(check(ops).ok, False)


# --- property: a sequential execution, stretched into overlapping intervals,
# is always linearizable.

_op = st.tuples(
    st.sampled_from([PUT, GET, DELETE]),
    st.sampled_from([b"a", b"b", b"c"]),
    st.sampled_from([b"1", b"2", b"3"]),
    st.integers(0, 6),  # how far before its linearization point it starts
    st.integers(0, 6),  # how far after it ends
    # Writes only: the client saw the outcome, or it lost it (timeout) and
    # the write took effect anyway, or it lost it and the write never did.
    st.sampled_from(["known", "lost_applied", "lost_dropped"]),
)


@st.composite
def sequential_histories(draw):
    steps = draw(st.lists(_op, max_size=40))
    state = {}
    ops = []
    for n, (kind, key, value, before, after, fate) in enumerate(steps):
        point = 10 * n  # linearization point: strictly increasing
        if kind != GET and fate == "lost_dropped":
            ops.append(Operation(n, kind, key, value if kind == PUT else None, call=point - before))
            continue
        if kind == PUT:
            state[key] = value
            output = None
        elif kind == GET:
            output = state.get(key)
            value = None
        else:
            output = state.pop(key, None) is not None
            value = None
        ret = None if (fate != "known" and kind != GET) else point + after
        ops.append(Operation(n, kind, key, value, output, call=point - before, ret=ret))
    return ops


class SequentialExecutionsAreLinearizable(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(sequential_histories())
    def test_any_sequential_execution_with_overlaps_is_linearizable(self, ops):
        result = check(ops)
        self.assertTrue(result.ok, result.explanation)


# --- the search (with its reductions) agrees with brute force on small
# histories, linearizable or not.


def brute_force(ops):
    """Try every order consistent with real time."""
    import itertools

    def precedes(a, b):
        return a.ret is not None and a.ret < b.call

    for order in itertools.permutations(ops):
        if any(precedes(b, a) for i, a in enumerate(order) for b in order[i + 1:]):
            continue
        state = None
        for op in order:
            if op.kind == PUT:
                state = op.value
            elif op.kind == GET:
                if op.ret is not None and op.output != state:
                    break
            else:
                if op.ret is not None and op.output != (state is not None):
                    break
                state = None
        else:
            return True
    return False


@st.composite
def small_histories(draw):
    ops = []
    for n in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from([PUT, GET, DELETE]))
        call = draw(st.integers(0, 10))
        unknown = kind != GET and draw(st.booleans())
        ret = None if unknown else call + draw(st.integers(0, 5))
        value = draw(st.sampled_from([b"a", b"b", b"c"])) if kind == PUT else None
        if kind == GET:
            output = draw(st.sampled_from([None, b"a", b"b", b"c"]))
        elif kind == DELETE:
            output = None if unknown else draw(st.booleans())
        else:
            output = None
        ops.append(Operation(n, kind, b"k", value, output, call=call, ret=ret))
    return ops


class AgreesWithBruteForce(SynchronousTestCase):
    @settings(max_examples=500, deadline=None)
    @given(small_histories())
    def test_checker_agrees_with_brute_force(self, ops):
        self.assertEqual(check(ops).ok, brute_force(ops), [op.describe() for op in ops])


class ManyUnknownOutcomes(SynchronousTestCase):
    def test_many_unknown_writes_are_decided_quickly(self):
        # 60 writes that timed out, all concurrent with everything after
        # them: exponential without the reductions.
        ops = [put(n, b"k", b"lost-%d" % n, n, None) for n in range(60)]
        ops += [Operation(100 + n, DELETE, b"k", call=n, ret=None) for n in range(20)]
        ops.append(put(200, b"k", b"seen", 70, None))
        ops.append(get(201, b"k", b"seen", 80, 81))
        ops.append(get(201, b"k", None, 82, 83))
        self.assertTrue(check(ops, max_steps=5_000_000).ok)
        ops.append(get(202, b"k", b"lost-3", 84, 85))
        ops.append(get(202, b"k", b"seen", 86, 87))
        self.assertIs(check(ops, max_steps=5_000_000).ok, False)
