"""Mutation tests of the data model: each puts back a plausible bug in
revisions, transactions, compaction or exactly-once, and the seeded
simulator (its revision workload and checks, `geocachedb.testing.revisions`)
must catch it within 1,000 seeds."""

from geocachedb import commands, mvcc
from geocachedb.testing import sim

from tests.test_mutations import MutationTest


class TxnAppliedHalf(MutationTest):
    def test_simulator_catches_a_txn_that_applies_only_its_first_write(self):
        original = commands._txn

        def half(space, txn, change, out, budget):
            original(space, txn, change, out, budget)
            if len(change.entries) > 1:  # forget every write but the first
                first = next(iter(change.entries))
                for key in list(change.entries)[1:]:
                    del change.entries[key]
                change.writes = {k: v for k, v in change.writes.items()
                                 if mvcc.decode_event(v)[1] == first}

        self.patch(commands, "_txn", half)
        result = self.find_violation(sim.SimConfig, nodes=[3], run_time=2000,
                                     kinds=["txn-atomicity"])
        self.assertCaught(result, "txn-atomicity")


class CompactionDropsItsTombstone(MutationTest):
    def test_simulator_catches_a_compaction_that_drops_the_tombstone_at_its_revision(self):
        original = mvcc.KeySpace.compact

        def compact(self, revision, writes):
            original(self, revision, writes)
            for key, entries in list(self.index.items()):
                if entries[0][mvcc.KIND] != mvcc.PUT and entries[0][mvcc.REV] == revision:
                    writes[mvcc.history_key(entries[0][mvcc.REV], entries[0][mvcc.SUB])] = None
                    del entries[0]
                    if not entries:
                        del self.index[key]

        self.patch(mvcc.KeySpace, "compact", compact)
        result = self.find_violation(sim.SimConfig, nodes=[3], run_time=2000,
                                     kinds=["history-lost", "revision-without-change"])
        self.assertCaught(result, "history-lost", "revision-without-change")


class FailedTxnBumpsTheRevision(MutationTest):
    def test_simulator_catches_a_revision_made_by_a_txn_whose_compares_failed(self):
        original = commands._txn

        def bumping(space, txn, change, out, budget):
            original(space, txn, change, out, budget)
            if not out.succeeded:
                space.revision += 1

        self.patch(commands, "_txn", bumping)
        result = self.find_violation(sim.SimConfig, nodes=[3], run_time=2000,
                                     kinds=["revision-without-change"])
        self.assertCaught(result, "revision-without-change")


class RetriedTxnAppliedTwice(MutationTest):
    def test_simulator_catches_a_retried_txn_applied_again(self):
        from geocachedb import sessions
        original = sessions.SessionTable.lookup

        def lookup(self, client_id, seq, ack_floor):
            seen = original(self, client_id, seq, ack_floor)
            if seen is not False and seen is not None and seen.HasField("txn"):
                return False  # "new": applied again
            return seen

        self.patch(sessions.SessionTable, "lookup", lookup)
        result = self.find_violation(sim.SimConfig, nodes=[3, 5], run_time=2000,
                                     kinds=["txn-count", "txn-order", "history-read"])
        self.assertCaught(result, "txn-count", "txn-order", "history-read")
