"""The node's run-time log level."""

from twisted.logger import LogLevel, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from geocachedb.node.loglevel import NodeLogLevel


class LogLevelTests(SynchronousTestCase):
    def setUp(self):
        self.seen = []
        self.publisher = LogPublisher(self.seen.append)
        self.level = NodeLogLevel(self.publisher)
        self.assertTrue(self.level.install())

    def emit(self, level, namespace="geocachedb.node"):
        self.publisher({"log_level": level, "log_namespace": namespace, "log_format": "x"})

    def test_info_by_default_then_changed_at_run_time(self):
        self.emit(LogLevel.debug)
        self.emit(LogLevel.info)
        self.assertEqual(len(self.seen), 1)
        self.level.set("debug")
        self.emit(LogLevel.debug)
        self.assertEqual(len(self.seen), 2)
        self.level.set("error")
        self.emit(LogLevel.warn)
        self.assertEqual(len(self.seen), 2)

    def test_reconnect_chatter_starts_at_warn(self):
        self.emit(LogLevel.info, "twisted.application._client_service")
        self.assertEqual(self.seen, [])
        self.emit(LogLevel.warn, "twisted.application._client_service")
        self.assertEqual(len(self.seen), 1)

    def test_unknown_level_is_a_clear_error(self):
        e = self.assertRaises(ValueError, self.level.set, "loud")
        self.assertIn("debug, info, warn, error", str(e))

    def test_uninstall_puts_the_original_observers_back(self):
        self.level.set("error")
        self.emit(LogLevel.info)
        self.assertEqual(self.seen, [])
        self.level.uninstall()
        self.emit(LogLevel.debug)
        self.assertEqual(len(self.seen), 1)
        self.assertEqual(self.publisher._observers, [self.seen.append])
