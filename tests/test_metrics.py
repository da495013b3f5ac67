"""The node's own figures for `stats` (`geocachedb.server.metrics`)."""

import gc

from twisted.trial import unittest

from geocachedb.server.metrics import GCPauses, NodeMetrics, fsync_summary


class GCPausesTests(unittest.TestCase):
    def test_counts_and_times_each_collection_while_installed(self):
        pauses = GCPauses()
        pauses.install()
        self.addCleanup(pauses.uninstall)
        gc.collect(2)
        gc.collect(0)
        self.assertGreaterEqual(pauses.count[2], 1)
        self.assertGreaterEqual(pauses.count[0], 1)
        self.assertGreater(pauses.total[2], 0.0)
        self.assertGreaterEqual(pauses.total[2], pauses.longest[2])
        pauses.uninstall()
        before = list(pauses.count)
        gc.collect(2)
        self.assertEqual(pauses.count, before)
        line = pauses.summary()
        self.assertIn("gen2 %d (" % before[2], line)

    def test_installing_twice_counts_once(self):
        pauses = GCPauses()
        pauses.install()
        pauses.install()
        self.addCleanup(pauses.uninstall)
        gc.collect(2)
        first = pauses.count[2]
        gc.collect(2)
        self.assertEqual(pauses.count[2], first + 1)


class LatencyTests(unittest.TestCase):
    def test_percentiles_of_the_recent_window(self):
        metrics = NodeMetrics()
        for ms in range(1, 101):
            metrics.observe_latency(ms / 1000.0)
        figures = metrics.latency_ms()
        self.assertEqual(figures["p50"], 51.0)
        self.assertEqual(figures["p99"], 100.0)
        self.assertEqual(figures["max"], 100.0)


class InterpreterTuningTests(unittest.TestCase):
    def test_start_freezes_and_tunes_stop_restores(self):
        import sys

        from geocachedb.node.tuning import InterpreterTuning

        before = gc.get_threshold()
        switch = sys.getswitchinterval()
        tuning = InterpreterTuning(gen0=12345, switch_interval=0.002)
        tuning.startService()
        try:
            self.assertEqual(gc.get_threshold(), (12345,) + before[1:])
            self.assertGreater(gc.get_freeze_count(), 0)
            self.assertAlmostEqual(sys.getswitchinterval(), 0.002)
        finally:
            tuning.stopService()
        self.assertEqual(gc.get_threshold(), before)
        self.assertEqual(gc.get_freeze_count(), 0)
        self.assertAlmostEqual(sys.getswitchinterval(), switch)


class FsyncSummaryTests(unittest.TestCase):
    def test_total_mean_p99_and_longest_in_milliseconds(self):
        recent = [0.001] * 99 + [0.010]
        line = fsync_summary({"fsyncs": 100, "fsync_seconds": sum(recent),
                               "fsync_max_seconds": 0.010, "fsync_recent_seconds": recent})
        self.assertEqual(line, "total 109.0  mean 1.090  p99 10.000  max 10.000")
        self.assertEqual(fsync_summary({"fsyncs": 0}), "-")
