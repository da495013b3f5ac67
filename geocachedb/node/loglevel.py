"""A run-time log level for the node (the admin shell's ``loglevel``).

twistd installs its log observers before our service starts, so the node
wraps whichever observers the global publisher has in one
`FilteringLogObserver` whose `LogLevelFilterPredicate` it controls.  Twisted
offers no public way to list a publisher's observers; we read
``_observers`` and, when that is absent (a future Twisted), fall back to
leaving logging unfiltered rather than failing.

Twisted's reconnecting client logs a line each time it schedules a retry;
with a peer down for a day that is tens of thousands of lines, so that
namespace starts at ``warn`` (the peer network logs its own connect/lost
lines).
"""

import logging

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogPublisher,
)

LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
}

QUIET_NAMESPACES = ("twisted.application._client_service",)


class NodeLogLevel:
    def __init__(self, publisher=globalLogPublisher, level=LogLevel.info):
        self.publisher = publisher
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=level)
        for namespace in QUIET_NAMESPACES:
            self.predicate.setLogLevelForNamespace(namespace, LogLevel.warn)
        self.installed = False
        self._wrapped = []  # (original observer, its filtering wrapper)

    def install(self):
        observers = list(getattr(self.publisher, "_observers", None) or [])
        if self.installed or not observers:
            return False
        for observer in observers:
            wrapper = FilteringLogObserver(observer, [self.predicate])
            self.publisher.removeObserver(observer)
            self.publisher.addObserver(wrapper)
            self._wrapped.append((observer, wrapper))
        self.installed = True
        return True

    def uninstall(self):
        """Put the original observers back (a node stopped inside a longer
        process, such as a test run, must not leave its filter behind)."""
        for observer, wrapper in self._wrapped:
            self.publisher.removeObserver(wrapper)
            self.publisher.addObserver(observer)
        self._wrapped = []
        self.installed = False

    def set(self, name):
        try:
            level = LEVELS[name.lower()]
        except KeyError:
            raise ValueError("unknown log level %r (choose from debug, info, warn, error)" % name) from None
        self.predicate.setLogLevelForNamespace("", level)  # "": the default
        return level


_STDLIB_LEVELS = (
    (logging.ERROR, LogLevel.error),
    (logging.WARNING, LogLevel.warn),
    (logging.INFO, LogLevel.info),
)


class StdlibToTwisted(logging.Handler):
    """The reactor-free layers (`geocachedb.server`) log through the
    standard library's `logging`; this hands their records to
    `twisted.logger` under the same namespace, so the node has one log (and
    one run-time level, `NodeLogLevel`)."""

    def __init__(self, logger_name="geocachedb"):
        super().__init__(logging.DEBUG)
        self._stdlib = logging.getLogger(logger_name)
        self._loggers = {}

    def install(self):
        if self not in self._stdlib.handlers:
            self._stdlib.addHandler(self)
            self._stdlib.setLevel(logging.DEBUG)  # `NodeLogLevel` filters

    def uninstall(self):
        if self in self._stdlib.handlers:
            self._stdlib.removeHandler(self)

    def emit(self, record):
        level = LogLevel.debug
        for threshold, twisted_level in _STDLIB_LEVELS:
            if record.levelno >= threshold:
                level = twisted_level
                break
        logger = self._loggers.get(record.name)
        if logger is None:
            logger = self._loggers[record.name] = Logger(namespace=record.name)
        logger.emit(level, "{text}", text=self.format(record))
