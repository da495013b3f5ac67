"""The errors a client can see, one class per wire error code.

Server code raises (or passes to callbacks) these; the client protocol turns
them into `Error` messages and the client libraries turn those back into the
same classes, so ``except NotLeader`` works on both sides.
"""

from geocachedb.wire import geocache_pb2 as pb


class GeoCacheError(Exception):
    """Base class; ``code`` is a `geocache.ErrorCode` value."""

    code = pb.INTERNAL

    def __init__(self, message="", **details):
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def code_name(self):
        return pb.ErrorCode.Name(self.code)

    def __str__(self):
        return "%s: %s" % (self.code_name, self.message)

    def to_pb(self, error=None):
        error = error if error is not None else pb.Error()
        error.code = self.code
        error.message = self.message
        return error


class NotFound(GeoCacheError):
    code = pb.NOT_FOUND


class NotLeader(GeoCacheError):
    """This node is not the leader; ``leader_id``/``leader_addr`` say who is
    (empty when unknown, e.g. during an election)."""

    code = pb.NOT_LEADER

    def __init__(self, message="not the leader", leader_id="", leader_addr=""):
        super().__init__(message)
        self.leader_id = leader_id or ""
        self.leader_addr = leader_addr or ""

    def to_pb(self, error=None):
        error = super().to_pb(error)
        error.leader_id = self.leader_id
        error.leader_addr = self.leader_addr
        return error


class InvalidArgument(GeoCacheError):
    code = pb.INVALID_ARGUMENT


class TooLarge(GeoCacheError):
    code = pb.TOO_LARGE


class Unavailable(GeoCacheError):
    """The request could not be served now (no leader, no quorum, timed out,
    connection lost).  For a write, the outcome may be unknown: it may still
    be applied (retry with the same client id and sequence number)."""

    code = pb.UNAVAILABLE


class Internal(GeoCacheError):
    code = pb.INTERNAL


class Compacted(GeoCacheError):
    """The revision asked for is below the compaction point (the message
    names it)."""

    code = pb.COMPACTED


class FutureRevision(GeoCacheError):
    """The revision asked for is above the current one."""

    code = pb.FUTURE_REVISION


class SessionExpired(GeoCacheError):
    """The client's session was dropped from the deduplication table, so
    a retried write cannot be told from a new one: it was not applied now,
    and whether its first attempt was is unknown."""

    code = pb.SESSION_EXPIRED


_BY_CODE = {
    cls.code: cls
    for cls in (NotFound, NotLeader, InvalidArgument, TooLarge, Unavailable, Internal,
                Compacted, FutureRevision, SessionExpired)
}


def from_pb(error):
    """The exception for a wire `Error`."""
    cls = _BY_CODE.get(error.code, Internal)
    if cls is NotLeader:
        return NotLeader(error.message, error.leader_id, error.leader_addr)
    return cls(error.message)
