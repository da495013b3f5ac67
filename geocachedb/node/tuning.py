"""CPython settings for a node process: the garbage collector and the GIL
switch interval (the last service `geocachedb.tap` starts).

The garbage collector.  A full (generation 2) collection walks every
tracked object and stops the reactor while it runs.  Under load a leader
ran one about every second, each stopping it for ~20 ms — most of its p99
write latency (issue 8; `stats` shows the pauses).  Two standard changes
for long-running CPython servers:

* `gc.freeze()` once started: the objects of the start-up (modules,
  Twisted, protobuf descriptors) move to a permanent generation that
  collections skip; they live as long as the process anyway.
* a larger first-generation threshold: a request's short-lived objects
  (closures, tuples) are usually freed before a collection runs, so few are
  promoted and the older generations fill (and get collected) far less
  often.  Reference counting frees acyclic garbage at once either way; only
  cycles wait longer.

The switch interval.  The storage flush thread (`KVStateMachine`) runs
Python while it prepares a batch; with CPython's default 5 ms interval the
reactor thread could wait that long for the GIL each time.  At 1 ms the
reactor gets it back sooner, which is what let the flush run once a second
(`FLUSH_SECONDS`) without raising the p99 latency.
"""

import gc
import sys

from twisted.application import service

GEN0_THRESHOLD = 20000
SWITCH_INTERVAL = 0.001


class InterpreterTuning(service.Service):
    name = "interpreter-tuning"

    def __init__(self, gen0=GEN0_THRESHOLD, switch_interval=SWITCH_INTERVAL):
        self.gen0 = gen0
        self.switch_interval = switch_interval
        self._saved = None

    def startService(self):
        service.Service.startService(self)
        self._saved = (gc.get_threshold(), sys.getswitchinterval())
        gc.collect()
        gc.freeze()
        gc.set_threshold(self.gen0, *self._saved[0][1:])
        sys.setswitchinterval(self.switch_interval)

    def stopService(self):
        service.Service.stopService(self)
        if self._saved is not None:
            thresholds, switch = self._saved
            gc.set_threshold(*thresholds)
            sys.setswitchinterval(switch)
            gc.unfreeze()
            self._saved = None
