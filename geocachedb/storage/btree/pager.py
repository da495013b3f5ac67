"""The pager: the B+Tree file's pages, its two meta pages, its free list,
the cache of decoded nodes, and the copy-on-write commit.

Crash safety is copy-on-write with two alternating meta pages, the LMDB /
bbolt approach.  A committed page is never written again while a meta page
that can still be chosen refers to it: a transaction writes every changed
node to a page that is free, then the commit is

    1. write the new pages (and the new free list), fsync;
    2. write the meta page of txn T into slot ``T % 2``, fsync.

Opening reads both meta pages and takes the valid one (magic, checksum) with
the higher txn id.  A SIGKILL before step 2 completes leaves the older meta
(txn T-1) as the newest valid one, and everything it refers to is untouched;
a torn meta page fails its checksum and the other one is used.  No log, no
replay.  The meta page also carries the key count and the Raft applied
index, so a batch and its index become durable in the same page write.

A damaged meta page looks exactly like a torn one, so a flipped byte in
the newest meta page also opens the commit before it -- consistent, with
its own applied index, so Raft re-applies the one batch missing -- and the
fallback is never silent: `recovery` says what happened, the store logs
it, and the checker warns.  Both meta pages bad is an error.

When can a freed page be reused?  Say txn T is being built and T-1 is the
last durable commit.  A crash before T's meta is durable falls back to T-1,
so nothing T-1 refers to may be overwritten by T: the pages T frees (old
versions of the nodes it copies, old overflow chains, the old free-list
pages) are only *pending* during T.  Once T's meta is durable (after the
second fsync) a crash can never make T-1 current again -- a crash during
T+1 falls back to T -- so the pages freed by T become reusable from T+1 on,
although T-1's meta page is still on disk in the other slot until T+1's
meta replaces it.  Pages allocated and freed within T itself were never in
a durable tree and are reused at once.

So after a clean commit both meta pages describe intact trees (T only
wrote pages T-1 did not use; the checker verifies the fallback tree too).
A crash in the middle of T+1 may leave T-1's tree partly overwritten, which
is harmless since T is current.  Should T's meta page then be damaged by
something other than a crash (bit rot), opening falls back to T-1 and any
recycled page is caught: every page header records the txn that wrote it,
and a page newer than the tree being read is refused (`read`), never
served as if it belonged to that tree.

A snapshot reader pins the root of the txn it started at; while any reader
is alive, pages freed by later txns are *held* instead of becoming reusable,
so the pinned tree stays intact on disk while writes go on.  Held pages are
written to the on-disk free list as free (after a restart no reader is left).

Free pages at the end of the file are cut off at commit, so a store that
shrinks gives the space back; the rest of the free list is reused lowest
page first, which keeps the file compact.

Large transactions (a snapshot install) do not hold every new node in
memory: past `spill_pages` dirty pages they are written early.  That is safe
for the same reason as above -- they are pages no durable meta refers to --
and only the meta write makes them part of the file.
"""

import errno
import fcntl
import math
import os

from geocachedb.storage.btree.errors import (
    CorruptFileError,
    FileLockedError,
    NotABTreeFileError,
    StorageFailedError,
)
from geocachedb.storage.btree.node import (
    FIRST_DATA_PAGE,
    FREELIST_ENTRIES,
    META_MAGIC,
    OVERFLOW_DATA,
    PAGE_SIZE,
    Leaf,
    Meta,
    PageFormatError,
    decode_freelist,
    decode_meta,
    decode_node,
    decode_overflow,
    encode_freelist,
    encode_leaf,
    encode_meta,
    encode_node,
    encode_overflow,
    page_crc_ok,
    page_txn,
)

DEFAULT_CACHE_PAGES = 65536  # decoded nodes kept in memory (~256 MiB of pages)
DEFAULT_SPILL_PAGES = 8192  # dirty pages a transaction holds before writing early
_IOV_MAX = 1024

_fdatasync = getattr(os, "fdatasync", os.fsync)


class Pin:
    """A reader's hold on the tree of one committed txn."""

    __slots__ = ("txn", "root", "alive")

    def __init__(self, txn, root):
        self.txn = txn
        self.root = root
        self.alive = True


class Pager:
    """Pages, meta, free list, node cache and transactions of one file.

    The tree (`geocachedb.storage.btree.tree`) mutates ``root``, ``depth``,
    ``keys`` and ``applied`` inside a transaction (`begin` ... `commit` or
    `abort`) and gets writable nodes through `writable` and `add_node`.
    """

    def __init__(
        self,
        path,
        readonly=False,
        lock=True,
        sync=True,
        cache_pages=DEFAULT_CACHE_PAGES,
        spill_pages=DEFAULT_SPILL_PAGES,
    ):
        self.path = path
        self.readonly = readonly
        self.sync = sync
        self._cache_cap = max(64, cache_pages)
        self._spill_pages = max(64, spill_pages)
        self._cache = {}
        self._in_txn = False
        self._failed = None
        self._readers = []
        self._held = []  # [(txn that freed them, [pages])]
        self.recovery = None  # a note when a damaged meta page was skipped
        self._reset_txn()
        if not readonly and not os.path.exists(path):
            _create(path)
        self._fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        try:
            if lock:
                try:
                    fcntl.flock(self._fd, (fcntl.LOCK_SH if readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise FileLockedError(path, "already open in another process (or another store in this one)") from None
                    raise
            self._load()
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    # -- opening ---------------------------------------------------------------

    def _load(self):
        size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, 2 * PAGE_SIZE, 0)
        if len(head) < 2 * PAGE_SIZE:
            if head[: len(META_MAGIC)] == META_MAGIC:
                raise CorruptFileError(self.path, "truncated to %d bytes, shorter than its two meta pages" % size)
            raise NotABTreeFileError(
                self.path, "not a geocachedb B+Tree file (%d bytes, no meta pages)" % size
            )
        results = [decode_meta(head[:PAGE_SIZE]), decode_meta(head[PAGE_SIZE:])]
        valid = [meta for meta, _ in results if meta is not None]
        if not valid:
            if all(reason == "not ours" for _, reason in results):
                raise NotABTreeFileError(self.path, "not a geocachedb B+Tree file (bad magic)")
            raise CorruptFileError(
                self.path,
                "both meta pages are damaged (page 0: %s; page 1: %s)" % (results[0][1], results[1][1]),
            )
        meta = max(valid, key=lambda m: m.txn)
        for slot, (m, reason) in enumerate(results):
            if m is None:
                self.recovery = "meta page %d is damaged (%s); opened txn %d from meta page %d" % (
                    slot, reason, meta.txn, 1 - slot,
                )
        if size < meta.npages * PAGE_SIZE:
            raise CorruptFileError(
                self.path,
                "truncated: %d bytes, but txn %d uses %d pages of %d bytes"
                % (size, meta.txn, meta.npages, PAGE_SIZE),
            )
        self.txn = meta.txn
        self.root = meta.root
        self.npages = meta.npages
        self.depth = meta.depth
        self.keys = meta.keys
        self.applied = meta.applied
        self._freelist_head = meta.freelist
        self._freelist_pages, free = self._read_freelist(meta)
        free.sort(reverse=True)  # pop() takes the lowest page
        self._free = free
        self._file_pages = -(-size // PAGE_SIZE)
        if not self.readonly and size > meta.npages * PAGE_SIZE:
            # Pages of a transaction that never committed (or spilled by one
            # that aborted): nothing valid refers to them.  The other meta
            # page's tree lies below this end as well: pages past it were
            # cut off by this txn's commit, which only cuts pages that were
            # already free in the txn before.
            os.ftruncate(self._fd, meta.npages * PAGE_SIZE)
            self._file_pages = meta.npages

    def _read_freelist(self, meta):
        pages = []
        free = []
        pno = meta.freelist
        while pno:
            if len(pages) > meta.npages:
                raise CorruptFileError(self.path, "the free list loops")
            page = self.read(pno)
            try:
                entries, pno_next = decode_freelist(page)
            except PageFormatError as e:
                raise CorruptFileError(self.path, "free-list page %d: %s" % (pno, e)) from None
            pages.append(pno)
            free.extend(entries)
            pno = pno_next
        if len(free) != meta.nfree:
            raise CorruptFileError(
                self.path, "the free list holds %d pages, the meta page says %d" % (len(free), meta.nfree)
            )
        for p in free:
            if not FIRST_DATA_PAGE <= p < meta.npages:
                raise CorruptFileError(self.path, "the free list names page %d outside the file" % p)
        return pages, free

    # -- reading -----------------------------------------------------------------

    def check_usable(self):
        if self._fd is None:
            raise RuntimeError("storage is closed")
        if self._failed is not None:
            raise StorageFailedError(self.path, "a commit failed (%s); reopen the store" % self._failed)

    def read(self, pno):
        """The raw bytes of page ``pno``, checksum verified."""
        if not FIRST_DATA_PAGE <= pno < self.npages:
            raise CorruptFileError(self.path, "reference to page %d, outside the file's %d pages" % (pno, self.npages))
        page = os.pread(self._fd, PAGE_SIZE, pno * PAGE_SIZE)
        if not page_crc_ok(page):
            if len(page) < PAGE_SIZE:
                raise CorruptFileError(self.path, "page %d is beyond the end of the file (truncated?)" % pno)
            raise CorruptFileError(self.path, "page %d fails its checksum" % pno)
        # A tree never refers to a page written after it: such a page was
        # reused, so the tree being read is an old one whose pages were
        # recycled (only possible when a damaged meta page made us fall
        # back).  Refuse it rather than answer from the wrong page.
        written = page_txn(page)
        if written > self.txn + self._in_txn:
            raise CorruptFileError(
                self.path,
                "page %d was written by txn %d, after the tree being read (txn %d): "
                "the file mixes versions" % (pno, written, self.txn),
            )
        return page

    def node(self, pno):
        """The decoded node in page ``pno`` (from the cache when there)."""
        node = self._cache.get(pno)
        if node is None:
            try:
                node = decode_node(self.read(pno))
            except PageFormatError as e:
                raise CorruptFileError(self.path, "page %d: %s" % (pno, e)) from None
            # Make room first: evicting after inserting could drop the very
            # node being returned (when it is the only clean one) and a
            # caller about to make it writable would then hold an object
            # the cache no longer has.
            if len(self._cache) >= self._cache_cap:
                self._evict()
            self._cache[pno] = node
        return node

    def _overflow_page(self, pno):
        pending = self._to_write.get(pno)
        page = pending if pending.__class__ is bytes else self.read(pno)
        try:
            return decode_overflow(page)
        except PageFormatError as e:
            raise CorruptFileError(self.path, "page %d: %s" % (pno, e)) from None

    def read_overflow(self, ref):
        """The value an `Overflow` reference points to."""
        parts = []
        remaining = ref.length
        pno = ref.page
        while remaining > 0:
            data, pno_next = self._overflow_page(pno)
            if not data or len(data) > remaining:
                raise CorruptFileError(self.path, "overflow page %d does not match its value's length" % pno)
            parts.append(data)
            remaining -= len(data)
            if remaining and not pno_next:
                raise CorruptFileError(self.path, "overflow chain ends early at page %d" % pno)
            pno = pno_next
        return b"".join(parts)

    def overflow_pages(self, ref):
        pages = []
        remaining = ref.length
        pno = ref.page
        while remaining > 0:
            data, pno_next = self._overflow_page(pno)
            if not data or len(data) > remaining:
                raise CorruptFileError(self.path, "overflow page %d does not match its value's length" % pno)
            pages.append(pno)
            remaining -= len(data)
            pno = pno_next
        return pages

    def _evict(self):
        """Drop the oldest-loaded quarter of the clean cached nodes (FIFO:
        cheaper than LRU bookkeeping on every hit, and a hot node that is
        dropped costs one pread to come back).

        Invariant: every node waiting in ``_to_write`` is also the one in
        the cache (`add_node`, `touch`), and such nodes are never evicted,
        so a node is never modified in one copy and read from another."""
        cache = self._cache
        excess = len(cache) - self._cache_cap * 3 // 4
        if excess <= 0:
            return
        dirty = self._to_write
        victims = []
        for pno in cache:
            if pno not in dirty:
                victims.append(pno)
                if len(victims) >= excess:
                    break
        for pno in victims:
            del cache[pno]

    # -- transactions --------------------------------------------------------------

    def _reset_txn(self):
        self._txn_pages = set()  # allocated by this txn: writable in place
        self._to_write = {}  # pno -> node or sealed page bytes
        self._pending = []  # freed by this txn, reusable after it commits
        self._taken = []  # taken from the free list by this txn
        self._reuse = []  # allocated and freed again by this txn

    def begin(self):
        self.check_usable()
        if self.readonly:
            raise RuntimeError("%s is open read-only" % self.path)
        assert not self._in_txn, "nested transaction"
        self._in_txn = True
        self._saved = (self.root, self.depth, self.keys, self.applied, self.npages)

    def abort(self):
        """Forget the transaction: the committed tree was never touched."""
        if not self._in_txn:
            return
        for pno in self._txn_pages:
            self._cache.pop(pno, None)
        if self._taken:
            self._free.extend(self._taken)
            self._free.sort(reverse=True)
        self.root, self.depth, self.keys, self.applied, self.npages = self._saved
        self._reset_txn()
        self._in_txn = False
        if self._file_pages > self.npages:
            # Pages spilled past the end by the aborted txn: junk.  (Both
            # meta pages' trees lie below the current end; see _load.)
            try:
                os.ftruncate(self._fd, self.npages * PAGE_SIZE)
                self._file_pages = self.npages
            except OSError:
                pass

    def alloc(self):
        if self._reuse:
            pno = self._reuse.pop()
        elif self._free:
            pno = self._free.pop()
            self._taken.append(pno)
        else:
            pno = self.npages
            self.npages += 1
        self._txn_pages.add(pno)
        self._cache.pop(pno, None)
        return pno

    def free(self, pno):
        if pno in self._txn_pages:
            self._txn_pages.discard(pno)
            self._to_write.pop(pno, None)
            self._cache.pop(pno, None)
            self._reuse.append(pno)
        else:
            self._pending.append(pno)

    def add_node(self, node):
        pno = self.alloc()
        self._cache[pno] = node
        self._to_write[pno] = node
        return pno

    def writable(self, pno):
        """Return ``(pno', node)``: the node of page ``pno`` made writable,
        copied to a new page unless this transaction already owns it."""
        node = self.node(pno)
        if pno in self._txn_pages:
            self.touch(pno, node)
            return pno, node
        if self._readers:
            node = node.copy()  # a snapshot may still read the old version
        else:
            # Nothing will read the old version from memory again: after
            # the commit its page is free, after an abort it is read back
            # from disk.  So the node object moves to its new page instead
            # of being copied -- in a big tree, copying (a refcount touch
            # per key and value, scattered in memory) cost more than the
            # rest of a put.
            del self._cache[pno]
        self._pending.append(pno)
        return self.add_node(node), node

    def touch(self, pno, node):
        """Mark ``node`` (already owned by this txn) as needing a write.

        It goes back into the cache too: after a spill an owned node may
        have been evicted while the caller held it, and the object that
        will be written must be the one later lookups find."""
        self._to_write[pno] = node
        self._cache[pno] = node

    def owns(self, pno):
        return pno in self._txn_pages

    def write_overflow(self, value):
        """Store ``value`` in a new overflow chain; return its first page."""
        n = max(1, math.ceil(len(value) / OVERFLOW_DATA))
        pages = [self.alloc() for _ in range(n)]
        txn = self.txn + 1
        view = memoryview(value)
        for i, pno in enumerate(pages):
            chunk = bytes(view[i * OVERFLOW_DATA : (i + 1) * OVERFLOW_DATA])
            self._to_write[pno] = encode_overflow(chunk, pages[i + 1] if i + 1 < n else 0, txn)
        return pages[0]

    def free_overflow(self, ref):
        for pno in self.overflow_pages(ref):
            self.free(pno)

    def maybe_spill(self):
        """Write the dirty pages early when there are many (see module doc)."""
        if len(self._to_write) > self._spill_pages:
            try:
                self._write_pages(self.txn + 1)
            except BaseException as e:
                self._failed = e
                raise
            self._to_write = {}
            if len(self._cache) > self._cache_cap:
                self._evict()

    def commit(self):
        """Make the transaction durable: pages, fsync, meta, fsync."""
        txn = self.txn + 1
        try:
            pending, freelist_pages, nfree = self._prepare_freelist(txn)
            self._write_pages(txn)
            self._fsync()
            meta = Meta(
                txn, self.root, self.npages, self._freelist_head, nfree, self.depth, self.keys, self.applied
            )
            self._pwrite_all([encode_meta(meta)], (txn % 2) * PAGE_SIZE)
            self._fsync()
        except BaseException as e:
            # The file still holds the last commit, but what is in memory
            # no longer matches it: refuse work until reopened.
            self._failed = e
            self._in_txn = False
            if isinstance(e, OSError):
                raise StorageFailedError(self.path, "commit of txn %d failed: %s" % (txn, e)) from e
            raise
        self.txn = txn
        self._freelist_pages = freelist_pages
        if self._readers:
            self._held.append((txn, pending))
        elif pending:
            self._release(pending)
        self._reset_txn()
        self._in_txn = False
        if self.npages < self._file_pages:
            # Only after the meta is durable: the cut pages were free in it.
            try:
                os.ftruncate(self._fd, self.npages * PAGE_SIZE)
                self._file_pages = self.npages
            except OSError:
                pass  # a longer file is harmless
        if len(self._cache) > self._cache_cap:
            self._evict()

    def _prepare_freelist(self, txn):
        """Settle the free list this commit records; returns ``(pending,
        freelist_pages, nfree)``."""
        free = self._free
        changed = bool(self._pending or self._taken or self._reuse)
        if self._reuse:
            free.extend(self._reuse)
            self._reuse = []
            free.sort(reverse=True)
        # Cut reusable pages off the end of the file (never pending ones:
        # the last durable tree may use them).
        top = self.npages - 1
        cut = 0
        while cut < len(free) and free[cut] == top - cut:
            cut += 1
        if cut:
            del free[:cut]
            self.npages -= cut
            changed = True
        held = [p for _, pages in self._held for p in pages]
        if not changed:
            return [], self._freelist_pages, len(free) + len(held)
        # The old free-list pages belong to the last durable meta: pending.
        pending = self._pending + self._freelist_pages
        total = len(free) + len(pending) + len(held)
        pages = []
        while len(pages) * FREELIST_ENTRIES < total:
            if free:
                pno = free.pop()
                total -= 1
            else:
                pno = self.npages
                self.npages += 1
            self._txn_pages.add(pno)
            pages.append(pno)
        entries = sorted(free + pending + held)
        for i, pno in enumerate(pages):
            chunk = entries[i * FREELIST_ENTRIES : (i + 1) * FREELIST_ENTRIES]
            self._to_write[pno] = encode_freelist(chunk, pages[i + 1] if i + 1 < len(pages) else 0, txn)
        self._freelist_head = pages[0] if pages else 0
        return pending, pages, len(entries)

    def _write_pages(self, txn):
        dirty = self._to_write
        if not dirty:
            return
        run_start = None
        prev = None
        bufs = []
        for pno in sorted(dirty):
            obj = dirty[pno]
            data = obj if obj.__class__ is bytes else encode_node(obj, txn)
            if prev is not None and pno == prev + 1 and len(bufs) < _IOV_MAX:
                bufs.append(data)
            else:
                if bufs:
                    self._pwrite_all(bufs, run_start * PAGE_SIZE)
                run_start = pno
                bufs = [data]
            prev = pno
        self._pwrite_all(bufs, run_start * PAGE_SIZE)
        self._file_pages = max(self._file_pages, prev + 1)

    # Both I/O primitives are methods so that tests can simulate a crash
    # (or a torn write) at any point of a commit.
    def _pwrite_all(self, bufs, offset):
        total = sum(len(b) for b in bufs)
        done = os.pwritev(self._fd, bufs, offset) if len(bufs) > 1 else os.pwrite(self._fd, bufs[0], offset)
        if done < total:
            rest = b"".join(bufs)[done:]
            while rest:
                n = os.pwrite(self._fd, rest, offset + done)
                done += n
                rest = rest[n:]

    def _fsync(self):
        if self.sync:
            _fdatasync(self._fd)

    # -- snapshot readers ----------------------------------------------------------

    def pin(self):
        """Pin the current committed tree until `unpin`."""
        assert not self._in_txn
        pin = Pin(self.txn, self.root)
        self._readers.append(pin)
        return pin

    def unpin(self, pin):
        if not pin.alive:
            return
        pin.alive = False
        self._readers.remove(pin)
        oldest = min((r.txn for r in self._readers), default=None)
        keep = []
        released = []
        for txn, pages in self._held:
            if oldest is None or txn <= oldest:
                released.extend(pages)
            else:
                keep.append((txn, pages))
        self._held = keep
        if released:
            self._release(released)

    def _release(self, pages):
        """Make freed pages reusable; their old nodes leave the cache so
        that it holds only nodes some tree can still reach."""
        cache = self._cache
        for pno in pages:
            cache.pop(pno, None)
        self._free.extend(pages)
        self._free.sort(reverse=True)

    # -- misc ----------------------------------------------------------------------

    def stats(self):
        return {
            "txn": self.txn,
            "pages": self.npages,
            "free_pages": len(self._free) + sum(len(p) for _, p in self._held),
            "depth": self.depth,
            "cached_nodes": len(self._cache),
            "bytes_on_disk": os.fstat(self._fd).st_size if self._fd is not None else 0,
        }

    @property
    def closed(self):
        return self._fd is None

    def close(self):
        if self._fd is None:
            return
        if self._in_txn:
            self.abort()
        for pin in list(self._readers):
            pin.alive = False
        self._readers = []
        self._cache = {}
        fd, self._fd = self._fd, None
        os.close(fd)  # also releases the flock


def _create(path):
    """Create an empty tree file atomically: a crash leaves either no file
    or a complete one (never a half-written file that looks damaged)."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        root = FIRST_DATA_PAGE
        pages = [
            encode_meta(Meta(0, root, root + 1, 0, 0, 1, 0, 0)),
            encode_meta(Meta(1, root, root + 1, 0, 0, 1, 0, 0)),
            encode_leaf(Leaf(), 0),
        ]
        os.pwrite(fd, b"".join(pages), 0)
        os.fsync(fd)
        os.close(fd)
        fd = None
        try:
            os.link(tmp, path)  # fails if another process created it first
        except FileExistsError:
            pass
    finally:
        if fd is not None:
            os.close(fd)
        os.unlink(tmp)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
