"""Python garbage-collector settings for a node process (the last service
`geocachedb.tap` starts).

A full (generation 2) collection walks every tracked object and stops the
reactor while it runs.  Under load a leader ran one every second or so, each
stopping it for ~20 ms — the largest part of its p99 write latency (issue 8;
`stats` shows the pauses).  Two changes, both standard for long-running
CPython servers:

* `gc.freeze()` once started: the objects of the start-up (modules, Twisted,
  protobuf descriptors) move to a permanent generation that collections
  skip; they live as long as the process anyway.
* a larger first-generation threshold: a request's short-lived objects
  (closures, tuples) are usually freed before a collection runs, so fewer of
  them are promoted and the older generations fill (and get collected)
  far less often.  Reference counting frees acyclic garbage at once either
  way; only cycles wait longer.
"""

import gc

from twisted.application import service

GEN0_THRESHOLD = 20000


class GCTuning(service.Service):
    name = "gc-tuning"

    def __init__(self, gen0=GEN0_THRESHOLD):
        self.gen0 = gen0
        self._saved = None

    def startService(self):
        service.Service.startService(self)
        self._saved = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(self.gen0, *self._saved[1:])

    def stopService(self):
        service.Service.stopService(self)
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            gc.unfreeze()
            self._saved = None
