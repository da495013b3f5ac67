"""ReadIndex bookkeeping on the leader (Raft thesis §6.4).

A linearizable read is registered with the leader's commit index at that
moment; it is safe to serve once a quorum has confirmed, after the
registration, that this node is still the leader.  Confirmation rides on
heartbeats: each heartbeat round carries the sequence number of the newest
registered read as its ``context``, and a follower's answer echoes it.  A
peer that acknowledged round ``n`` confirmed every read with sequence <=
``n``, so one round confirms any number of reads, and the reads confirmed by
a quorum are exactly those with sequence <= the quorum-acknowledged sequence
(the same majority math as the commit index).

Where it sits: the leader's core calls `add` for its own reads and for
followers' READ_INDEX requests, sends a heartbeat round with `round_context`,
feeds HEARTBEAT_RESP contexts to `ack`, and `release` hands back the reads
now confirmed (which become `ReadState`s or READ_INDEX_RESP messages).
"""

from collections import deque


def encode_seq(seq):
    return seq.to_bytes(8, "big")


def decode_seq(context):
    if len(context) != 8:
        return None
    return int.from_bytes(context, "big")


class PendingRead:
    __slots__ = ("seq", "index", "requester", "context")

    def __init__(self, seq, index, requester, context):
        self.seq = seq
        self.index = index
        self.requester = requester  # node id that asked (the leader itself or a follower)
        self.context = context      # the requester's request id, echoed back


class ReadIndexQueue:
    def __init__(self, self_id):
        self.self_id = self_id
        self._seq = 0
        self._pending = deque()
        self._acks = {}

    def __len__(self):
        return len(self._pending)

    def add(self, index, requester, context):
        self._seq += 1
        self._pending.append(PendingRead(self._seq, index, requester, context))
        return self._seq

    def round_context(self):
        """The context for a heartbeat round confirming every read so far."""
        return encode_seq(self._seq)

    def ack(self, peer, context):
        seq = decode_seq(context)
        if seq is None or seq > self._seq:
            return False
        if seq > self._acks.get(peer, 0):
            self._acks[peer] = seq
            return True
        return False

    def release(self, voters):
        """Pop and return the reads a quorum of ``voters`` (a MajorityConfig)
        has confirmed."""
        if not self._pending:
            return []
        acks = dict(self._acks)
        acks[self.self_id] = self._seq
        confirmed = voters.committed_index(acks)
        out = []
        pending = self._pending
        while pending and pending[0].seq <= confirmed:
            out.append(pending.popleft())
        return out

    def clear(self):
        """Drop every pending read (leadership lost); returns them."""
        out = list(self._pending)
        self._pending.clear()
        self._acks = {}
        return out
