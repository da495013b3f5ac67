"""The storage-neutral snapshot format: what `IStorage.snapshot_out` writes
and `snapshot_in` reads, so a snapshot from one backend loads into any other
(and backups outlive a change of backend).  It is also what a backup is: the
client checks a backup it pulled with `SnapshotReader` before keeping it, so
this module sits outside the storage package and imports nothing of
geocachedb.

Layout (all integers big-endian)::

    b"GCSNAP1\\n"  u64 applied_index
    repeated:    u32 key_len  u32 value_len  key  value
    trailer:     u32 0xFFFFFFFF  u64 record_count  u32 crc32(everything before)

The stream is produced and consumed in chunks of about `CHUNK_SIZE` bytes so
a large store never needs to be held in memory whole.
"""

import struct
import zlib

MAGIC = b"GCSNAP1\n"
CHUNK_SIZE = 256 * 1024
_END = 0xFFFFFFFF
_HEADER = struct.Struct(">8sQ")
_RECORD = struct.Struct(">II")
_TRAILER = struct.Struct(">IQI")


def encode(applied_index, items, chunk_size=CHUNK_SIZE):
    """Yield the snapshot of ``items`` (an iterable of (key, value) pairs in
    key order) and ``applied_index`` as bytes chunks."""
    crc = 0
    count = 0
    buf = [_HEADER.pack(MAGIC, applied_index)]
    size = _HEADER.size
    for key, value in items:
        buf.append(_RECORD.pack(len(key), len(value)))
        buf.append(bytes(key))
        buf.append(bytes(value))
        size += _RECORD.size + len(key) + len(value)
        count += 1
        if size >= chunk_size:
            chunk = b"".join(buf)
            crc = zlib.crc32(chunk, crc)
            yield chunk
            buf = []
            size = 0
    chunk = b"".join(buf) + _RECORD.pack(_END, 0)[:4]
    crc = zlib.crc32(chunk, crc)
    yield chunk + _TRAILER.pack(_END, count, crc)[4:]


class SnapshotReader:
    """Parse a snapshot stream incrementally.

    ``reader = SnapshotReader(chunks)``; ``reader.applied_index`` is known
    once the first pair is requested; iterate ``reader.items()`` for the
    pairs.  Raises ValueError on a stream that is not a snapshot, is
    truncated, or fails its checksum; callers must not commit what they read
    before the iteration finished without error.
    """

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._buf = bytearray()
        self._pos = 0
        self._crc = 0
        self.applied_index = None

    def _need(self, n):
        while len(self._buf) - self._pos < n:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                raise ValueError("snapshot is truncated") from None
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise ValueError("snapshot chunks must be bytes")
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += chunk

    def _take(self, n):
        self._need(n)
        data = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        self._crc = zlib.crc32(data, self._crc)
        return data

    def read_header(self):
        if self.applied_index is None:
            magic, index = _HEADER.unpack(self._take(_HEADER.size))
            if magic != MAGIC:
                raise ValueError("not a geocachedb snapshot (bad magic)")
            self.applied_index = index
        return self.applied_index

    def items(self):
        self.read_header()
        count = 0
        while True:
            (key_len,) = struct.unpack(">I", self._take(4))
            if key_len == _END:
                self._need(12)
                expected_count, expected_crc = struct.unpack(
                    ">QI", bytes(self._buf[self._pos : self._pos + 12])
                )
                self._pos += 12
                if expected_count != count or expected_crc != self._crc:
                    raise ValueError("snapshot checksum mismatch")
                if self._pos != len(self._buf) or next(self._chunks, None):
                    raise ValueError("snapshot has trailing data")
                return
            (value_len,) = struct.unpack(">I", self._take(4))
            if key_len == 0:
                raise ValueError("snapshot holds an empty key")
            key = self._take(key_len)
            value = self._take(value_len)
            count += 1
            yield key, value
