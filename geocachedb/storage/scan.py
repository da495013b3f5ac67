"""Turning the scan arguments of IStorage into one [lo, hi) key range."""


def prefix_end(prefix):
    """The smallest key greater than every key starting with ``prefix``, or
    None when there is none (the prefix is all 0xff bytes)."""
    stripped = bytes(prefix).rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def bounds(start=b"", end=None, prefix=None):
    """Return ``(lo, hi)`` with ``hi`` None for "no upper bound"."""
    lo = bytes(start or b"")
    hi = None if end is None or end == b"" else bytes(end)
    if prefix:
        prefix = bytes(prefix)
        lo = max(lo, prefix)
        pend = prefix_end(prefix)
        if pend is not None:
            hi = pend if hi is None else min(hi, pend)
    return lo, hi
