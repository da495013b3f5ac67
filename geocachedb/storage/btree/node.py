"""Page layouts of the B+Tree file: how nodes, overflow pages, free-list pages
and meta pages look on disk, and their in-memory forms.

Every page is `PAGE_SIZE` bytes.  Pages 0 and 1 are the two meta pages;
every other page starts with the common 16-byte header::

    u32 crc32(page[4:])   u8 type   u8 flags   u16 count   u64 txn

(all integers big-endian; ``txn`` is the transaction that wrote the page,
for the checker and for debugging).  After the header:

leaf (type 1, count = n entries)::

    u16 key_len[n]  u32 value_len[n]  key bytes...  value bytes...

  ``flags & 1`` says that some value is in an overflow chain; such a value
  has ``value_len | 0x80000000`` and its 8 inline bytes are ``u32
  first_page  u32 total_length``.  Keys first and values second, each
  concatenated, so decoding a leaf is one struct call and one slicing pass.

branch (type 2, count = n separator keys, n + 1 children)::

    u16 key_len[n]  u32 child[n + 1]  key bytes...

  Child ``i`` holds the keys ``k`` with ``key[i-1] <= k < key[i]``.  Branches
  hold separators only (the shortest byte string between two neighbouring
  leaves), never values.

overflow (type 3, count = data bytes in this page)::

    u32 next_page (0 at the end of the chain)  data...

free list (type 4, count = n entries)::

    u32 next_page (0 at the end)  u32 page[n]

meta (pages 0 and 1, no common header)::

    8s magic  u32 version  u32 page_size  u64 txn  u32 root  u32 npages
    u32 freelist_head  u32 nfree  u32 depth  u64 keys  u64 applied_index
    u32 crc32(all of the above)   zeros to the end of the page

Keys are at most `MAX_KEY` (511) bytes, the limit the whole system shares
(`geocachedb.limits`), so keys never need overflow pages: an entry's inline
part is kept under `MAX_INLINE_ENTRY` (a quarter of a page) by moving its
value, never its key, to an overflow chain.  That guarantees at least four
entries per leaf and seven separators per branch, which is what the split
and merge code relies on.
"""

import functools
import itertools
import struct
import zlib

from geocachedb.limits import MAX_KEY_SIZE

PAGE_SIZE = 4096
MAX_KEY = MAX_KEY_SIZE

T_LEAF = 1
T_BRANCH = 2
T_OVERFLOW = 3
T_FREELIST = 4
TYPE_NAMES = {T_LEAF: "leaf", T_BRANCH: "branch", T_OVERFLOW: "overflow", T_FREELIST: "free-list"}

HEADER = struct.Struct(">IBBHQ")
HEADER_SIZE = HEADER.size  # 16
_CRC = struct.Struct(">I")
_BODY_HEADER = struct.Struct(">BBHQ")  # the header without its crc
_U32 = struct.Struct(">I")
_TXN = struct.Struct(">Q")

# The bytes a node may use after the header.
NODE_LIMIT = PAGE_SIZE - HEADER_SIZE
# Below this a non-root node is merged with or refilled from a sibling.
MIN_FILL = NODE_LIMIT // 4
# Larger entries have their value moved to an overflow chain.
MAX_INLINE_ENTRY = NODE_LIMIT // 4

OVERFLOW_DATA = PAGE_SIZE - HEADER_SIZE - 4
FREELIST_ENTRIES = (PAGE_SIZE - HEADER_SIZE - 4) // 4

LEAF_HAS_OVERFLOW = 1
OVERFLOW_BIT = 0x80000000

META_MAGIC = b"GCBTREE\x01"
META_VERSION = 1
META = struct.Struct(">8sIIQIIIIIQQ")
META_PAGES = (0, 1)
FIRST_DATA_PAGE = 2

_ZEROS = bytes(PAGE_SIZE)


class PageFormatError(Exception):
    """A page whose checksum is right but whose content does not parse
    (only a bug or deliberate tampering produces one)."""


class Overflow:
    """A leaf value that lives in an overflow chain starting at ``page``."""

    __slots__ = ("page", "length")

    def __init__(self, page, length):
        self.page = page
        self.length = length

    def __repr__(self):
        return "Overflow(page=%d, length=%d)" % (self.page, self.length)


def entry_size(key, value):
    """Bytes a leaf entry takes in its page (lengths + key + inline value)."""
    return 6 + len(key) + (8 if value.__class__ is Overflow else len(value))


class Leaf:
    """A decoded leaf: parallel sorted ``keys`` and ``vals`` lists.

    ``size`` is the encoded body size, kept up to date by every mutation so
    that split/merge decisions never re-encode; ``novf`` counts the Overflow
    values so encoding takes its fast path when there are none.
    """

    __slots__ = ("keys", "vals", "size", "novf")

    def __init__(self, keys=None, vals=None, size=None, novf=None):
        self.keys = keys if keys is not None else []
        self.vals = vals if vals is not None else []
        if size is None:
            size = 0
            novf = 0
            for key, value in zip(self.keys, self.vals):
                size += entry_size(key, value)
                if value.__class__ is Overflow:
                    novf += 1
        self.size = size
        self.novf = novf

    def copy(self):
        return Leaf(self.keys[:], self.vals[:], self.size, self.novf)


class Branch:
    """A decoded branch: ``n`` separator keys and ``n + 1`` child pages."""

    __slots__ = ("keys", "children", "size")

    def __init__(self, keys, children, size=None):
        self.keys = keys
        self.children = children
        if size is None:
            size = 4 + sum(6 + len(k) for k in keys)
        self.size = size

    def copy(self):
        return Branch(self.keys[:], self.children[:], self.size)


# -- encoding -----------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _lens(n, m):
    """A Struct for ``n`` u16 followed by ``m`` u32 (cached: struct's own
    cache is small and leaf sizes vary)."""
    return struct.Struct(">%dH%dI" % (n, m))


def seal(body):
    """Pad ``body`` (a page without its crc) and prepend the crc."""
    pad = PAGE_SIZE - 4 - len(body)
    if pad < 0:
        raise PageFormatError("page body of %d bytes does not fit" % len(body))
    if pad:
        body += _ZEROS[:pad]
    return _CRC.pack(zlib.crc32(body)) + body


def encode_leaf(leaf, txn):
    keys = leaf.keys
    n = len(keys)
    if not leaf.novf:
        vals = leaf.vals
        head = _BODY_HEADER.pack(T_LEAF, 0, n, txn) + _lens(n, n).pack(
            *map(len, keys), *map(len, vals)
        )
        return seal(b"".join([head, *keys, *vals]))
    vlens = []
    inline = []
    for value in leaf.vals:
        if value.__class__ is Overflow:
            vlens.append(8 | OVERFLOW_BIT)
            inline.append(struct.pack(">II", value.page, value.length))
        else:
            vlens.append(len(value))
            inline.append(value)
    head = _BODY_HEADER.pack(T_LEAF, LEAF_HAS_OVERFLOW, n, txn) + _lens(n, n).pack(
        *map(len, keys), *vlens
    )
    return seal(b"".join([head, *keys, *inline]))


def encode_branch(branch, txn):
    keys = branch.keys
    n = len(keys)
    head = _BODY_HEADER.pack(T_BRANCH, 0, n, txn) + _lens(n, n + 1).pack(
        *map(len, keys), *branch.children
    )
    return seal(b"".join([head, *keys]))


def encode_node(node, txn):
    if node.__class__ is Leaf:
        return encode_leaf(node, txn)
    return encode_branch(node, txn)


def encode_overflow(data, next_page, txn):
    return seal(_BODY_HEADER.pack(T_OVERFLOW, 0, len(data), txn) + _U32.pack(next_page) + data)


def encode_freelist(pages, next_page, txn):
    n = len(pages)
    return seal(
        _BODY_HEADER.pack(T_FREELIST, 0, n, txn)
        + _U32.pack(next_page)
        + struct.pack(">%dI" % n, *pages)
    )


# -- decoding -----------------------------------------------------------------


def page_crc_ok(page):
    return len(page) == PAGE_SIZE and _CRC.unpack_from(page)[0] == zlib.crc32(
        memoryview(page)[4:]
    )


def page_type(page):
    return page[4]


def page_txn(page):
    """The txn that wrote a (non-meta) page."""
    return _TXN.unpack_from(page, 8)[0]


def decode_leaf(page):
    _, _, flags, n, _ = HEADER.unpack_from(page)
    lens = _lens(n, n).unpack_from(page, HEADER_SIZE)
    start = HEADER_SIZE + 6 * n
    if flags & LEAF_HAS_OVERFLOW:
        lens = [length & ~OVERFLOW_BIT for length in lens]
    offsets = list(itertools.accumulate(lens, initial=start))
    end = offsets[-1]
    if end > PAGE_SIZE:
        raise PageFormatError("leaf entries run past the end of the page")
    pieces = [page[a:b] for a, b in zip(offsets, offsets[1:])]
    keys = pieces[:n]
    vals = pieces[n:]
    novf = 0
    if flags & LEAF_HAS_OVERFLOW:
        raw = _lens(n, n).unpack_from(page, HEADER_SIZE)[n:]
        for i, vlen in enumerate(raw):
            if vlen & OVERFLOW_BIT:
                if vlen != 8 | OVERFLOW_BIT:
                    raise PageFormatError("bad overflow reference in leaf")
                vals[i] = Overflow(*struct.unpack(">II", vals[i]))
                novf += 1
    return Leaf(keys, vals, end - HEADER_SIZE, novf)


def decode_branch(page):
    n = HEADER.unpack_from(page)[3]
    fields = _lens(n, n + 1).unpack_from(page, HEADER_SIZE)
    klens = fields[:n]
    children = list(fields[n:])
    start = HEADER_SIZE + 6 * n + 4
    offsets = list(itertools.accumulate(klens, initial=start))
    if offsets[-1] > PAGE_SIZE:
        raise PageFormatError("branch keys run past the end of the page")
    keys = [page[a:b] for a, b in zip(offsets, offsets[1:])]
    return Branch(keys, children, offsets[-1] - HEADER_SIZE)


def decode_node(page):
    kind = page[4]
    if kind == T_LEAF:
        return decode_leaf(page)
    if kind == T_BRANCH:
        return decode_branch(page)
    raise PageFormatError("expected a tree node, found a %s page" % TYPE_NAMES.get(kind, "type %d" % kind))


def decode_overflow(page):
    """Return ``(data, next_page)``."""
    if page[4] != T_OVERFLOW:
        raise PageFormatError("expected an overflow page, found %s" % TYPE_NAMES.get(page[4], "type %d" % page[4]))
    n = HEADER.unpack_from(page)[3]
    if n > OVERFLOW_DATA:
        raise PageFormatError("overflow page claims %d bytes" % n)
    (next_page,) = _U32.unpack_from(page, HEADER_SIZE)
    start = HEADER_SIZE + 4
    return page[start : start + n], next_page


def decode_freelist(page):
    """Return ``(pages, next_page)``."""
    if page[4] != T_FREELIST:
        raise PageFormatError("expected a free-list page, found %s" % TYPE_NAMES.get(page[4], "type %d" % page[4]))
    n = HEADER.unpack_from(page)[3]
    if n > FREELIST_ENTRIES:
        raise PageFormatError("free-list page claims %d entries" % n)
    (next_page,) = _U32.unpack_from(page, HEADER_SIZE)
    return list(struct.unpack_from(">%dI" % n, page, HEADER_SIZE + 4)), next_page


# -- meta pages ---------------------------------------------------------------


class Meta:
    """One meta page: the root of one committed version of the file."""

    __slots__ = ("txn", "root", "npages", "freelist", "nfree", "depth", "keys", "applied")

    def __init__(self, txn, root, npages, freelist, nfree, depth, keys, applied):
        self.txn = txn
        self.root = root
        self.npages = npages
        self.freelist = freelist
        self.nfree = nfree
        self.depth = depth
        self.keys = keys
        self.applied = applied

    def __repr__(self):
        return "Meta(%s)" % ", ".join("%s=%r" % (f, getattr(self, f)) for f in self.__slots__)


def encode_meta(meta):
    body = META.pack(
        META_MAGIC,
        META_VERSION,
        PAGE_SIZE,
        meta.txn,
        meta.root,
        meta.npages,
        meta.freelist,
        meta.nfree,
        meta.depth,
        meta.keys,
        meta.applied,
    )
    body += _CRC.pack(zlib.crc32(body))
    return body + _ZEROS[: PAGE_SIZE - len(body)]


def decode_meta(page):
    """Return ``(meta, None)`` or ``(None, reason)``; ``reason`` is
    ``"not ours"`` when the magic is missing."""
    if len(page) < META.size + 4:
        return None, "not ours"
    fields = META.unpack_from(page)
    if fields[0] != META_MAGIC:
        return None, "not ours"
    (crc,) = _CRC.unpack_from(page, META.size)
    if crc != zlib.crc32(page[: META.size]):
        return None, "checksum mismatch"
    # The rest of a meta page is always zeros: checking it means that any
    # flipped byte anywhere in the page is noticed.
    if page[META.size + 4 : PAGE_SIZE].count(0) != PAGE_SIZE - META.size - 4:
        return None, "damaged (bytes after the checksum are not zero)"
    if fields[1] != META_VERSION:
        return None, "format version %d is not supported" % fields[1]
    if fields[2] != PAGE_SIZE:
        return None, "page size %d is not supported" % fields[2]
    meta = Meta(*fields[3:])
    if meta.npages < FIRST_DATA_PAGE + 1 or not FIRST_DATA_PAGE <= meta.root < meta.npages:
        return None, "root page %d outside the file's %d pages" % (meta.root, meta.npages)
    return meta, None


def shortest_separator(left, right):
    """The shortest ``s`` with ``left < s <= right`` (``left < right``): a
    prefix of ``right``.  Short separators keep branches wide."""
    n = min(len(left), len(right))
    i = 0
    while i < n and left[i] == right[i]:
        i += 1
    return right[: i + 1]
