"""Automatic compaction of the key history, run by the leader.

Sits in the server layer beside the other timed work: every check (once a
second of this server's clock) the leader compares the current revision
with the compaction point and, when more than ``keep`` revisions plus a
tenth of ``keep`` are retained, proposes one `compact` command that keeps
the last ``keep`` revisions.  The command goes through Raft like a
client's, so every replica compacts at the same revision; a follower
never proposes one, and a leader has at most one in flight (a deposed
leader's late one just fails with COMPACTED).  Compaction by revision
count bounds both the storage and the in-memory key index under churn.
"""

from geocachedb.commands import encode
from geocachedb.wire import geocache_pb2 as pb


class AutoCompaction:
    def __init__(self, server, keep_revisions, ticks_per_check):
        self._server = server
        self.keep = keep_revisions
        self._every = max(1, int(ticks_per_check))
        self._ticks = 0
        self._in_flight = False
        self.proposed = 0

    def tick(self):
        if not self.keep:
            return
        self._ticks += 1
        if self._ticks < self._every:
            return
        self._ticks = 0
        server = self._server
        if self._in_flight or server.replica.role != "leader":
            return
        sm = server.state_machine
        target = sm.revision - self.keep
        if target - sm.compact_revision <= max(1, self.keep // 10):
            return
        self._in_flight = True
        self.proposed += 1

        def done(result, error):
            self._in_flight = False

        server.submit_write(encode("compact", pb.CompactRequest(revision=target)), done)
