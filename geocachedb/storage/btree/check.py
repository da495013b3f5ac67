"""The B+Tree file checker: ``python -m geocachedb.storage.btree.check FILE``.

It reads the file on its own (not through the pager, which stops at the
first error) and reports every problem it finds, each naming the page:

* both meta pages: magic, checksum, which one is current, the file length;
* the current tree: page checksums and types, key order within each node,
  keys inside the bounds their parents' separators give, every leaf at the
  same depth, non-root nodes at least a quarter full (deletes merge or
  redistribute), leaves in ascending order from first to last (the "leaf
  chain" as a cursor walks it), overflow chains complete and exactly as
  long as their values, the key count;
* the free list: its pages, its entries in range and listed once;
* accounting: every page is a meta page, used exactly once (tree node,
  overflow page, free-list page) or on the free list -- never both, never
  neither (a leak);
* no page in a tree written by a later txn than the tree's own;
* the other (fallback) meta page's tree, structurally: after a clean commit
  copy-on-write promises that it is intact too, so a finding there points
  to a page reused too early -- or to a crash in the middle of the last
  commit, which is why it is reported as a warning, not a problem.

Exit status: 0 when the file is sound, 1 when a problem was found, 2 when
the file could not be checked at all (missing, in use, not ours).
FILE may also be a store directory holding ``data.btree``.
"""

import argparse
import errno
import fcntl
import os
import sys

from geocachedb.storage.btree.node import (
    FIRST_DATA_PAGE,
    MAX_INLINE_ENTRY,
    MAX_KEY,
    MIN_FILL,
    PAGE_SIZE,
    T_BRANCH,
    T_LEAF,
    TYPE_NAMES,
    Overflow,
    PageFormatError,
    decode_branch,
    decode_freelist,
    decode_leaf,
    decode_meta,
    decode_overflow,
    page_crc_ok,
    page_txn,
)

MAX_REPORTED = 200


class Report:
    """What the checker found: ``problems`` (the file is wrong), ``warnings``
    (worth knowing, e.g. a meta page torn by a crash), and ``info``."""

    def __init__(self, path):
        self.path = path
        self.problems = []
        self.warnings = []
        self.info = {}
        self.fatal = False  # could not be checked at all

    @property
    def ok(self):
        return not self.problems

    def problem(self, message):
        self.problems.append(message)

    def warn(self, message):
        self.warnings.append(message)

    def __repr__(self):
        return "<Report %s ok=%s problems=%r>" % (self.path, self.ok, self.problems[:5])


def _fmt_key(key):
    text = repr(bytes(key))
    return text if len(text) <= 40 else text[:37] + "...'"


class _Walker:
    def __init__(self, fd, meta, sink):
        self.fd = fd
        self.npages = meta.npages
        self.txn = meta.txn
        self.sink = sink
        self.owner = {}

    def problem(self, message):
        self.sink(message)

    def claim(self, pno, what):
        if not FIRST_DATA_PAGE <= pno < self.npages:
            self.problem("%s points to page %d, outside the data pages 2..%d" % (what, pno, self.npages - 1))
            return False
        if pno in self.owner:
            self.problem("page %d is used twice: as %s and as %s" % (pno, self.owner[pno], what))
            return False
        self.owner[pno] = what
        return True

    def read(self, pno, what):
        page = os.pread(self.fd, PAGE_SIZE, pno * PAGE_SIZE)
        if len(page) < PAGE_SIZE:
            self.problem("page %d (%s) is beyond the end of the file" % (pno, what))
            return None
        if not page_crc_ok(page):
            self.problem("page %d (%s) fails its checksum" % (pno, what))
            return None
        if page_txn(page) > self.txn:
            self.problem(
                "page %d (%s) was written by txn %d, after this tree's txn %d" % (pno, what, page_txn(page), self.txn)
            )
            return None
        return page

    def tree(self, meta):
        """Walk the tree of ``meta`` in key order; return the key count."""
        nkeys = 0
        prev_last = None  # (key, leaf page) of the previous leaf
        stack = [(meta.root, None, None, 1, "the root")]
        while stack:
            pno, lo, hi, depth, what = stack.pop()
            if not self.claim(pno, what):
                continue
            page = self.read(pno, what)
            if page is None:
                continue
            kind = page[4]
            where = "page %d (%s)" % (pno, what)
            if kind == T_LEAF:
                if depth != meta.depth:
                    self.problem("%s is a leaf at depth %d; the tree's leaves are at depth %d" % (where, depth, meta.depth))
                try:
                    leaf = decode_leaf(page)
                except (PageFormatError, Exception) as e:
                    self.problem("%s: does not parse as a leaf: %s" % (where, e))
                    continue
                keys = leaf.keys
                if pno != meta.root and leaf.size < MIN_FILL:
                    self.problem("%s: a non-root leaf under-full (%d bytes used, at least %d expected)" % (where, leaf.size, MIN_FILL))
                self._keys_in_order(keys, lo, hi, where)
                if keys:
                    if prev_last is not None and keys[0] <= prev_last[0]:
                        self.problem(
                            "leaf chain: %s starts with %s, not after %s, the last key of leaf page %d"
                            % (where, _fmt_key(keys[0]), _fmt_key(prev_last[0]), prev_last[1])
                        )
                    prev_last = (keys[-1], pno)
                for key, value in zip(keys, leaf.vals):
                    if value.__class__ is Overflow:
                        self._overflow(value, "overflow page of key %s in leaf page %d" % (_fmt_key(key), pno))
                    elif 6 + len(key) + len(value) > MAX_INLINE_ENTRY:
                        self.problem("%s: key %s has a %d-byte value inline (over the limit)" % (where, _fmt_key(key), len(value)))
                nkeys += len(keys)
            elif kind == T_BRANCH:
                if depth >= meta.depth:
                    self.problem("%s is a branch at depth %d; the tree's leaves are at depth %d" % (where, depth, meta.depth))
                    continue
                try:
                    branch = decode_branch(page)
                except (PageFormatError, Exception) as e:
                    self.problem("%s: does not parse as a branch: %s" % (where, e))
                    continue
                keys = branch.keys
                if not keys:
                    self.problem("%s: a branch with no separator keys" % where)
                elif pno != meta.root and branch.size < MIN_FILL:
                    self.problem("%s: a non-root branch under-full (%d bytes used, at least %d expected)" % (where, branch.size, MIN_FILL))
                self._keys_in_order(keys, lo, hi, where, separators=True)
                bounds = [lo] + keys + [hi]
                for i in reversed(range(len(branch.children))):
                    stack.append(
                        (branch.children[i], bounds[i], bounds[i + 1], depth + 1, "child %d of branch page %d" % (i, pno))
                    )
            else:
                self.problem("%s: expected a tree node, found a %s page" % (where, TYPE_NAMES.get(kind, "type-%d" % kind)))
        return nkeys

    def _keys_in_order(self, keys, lo, hi, where, separators=False):
        name = "separator" if separators else "key"
        for i, key in enumerate(keys):
            if not key or len(key) > MAX_KEY:
                self.problem("%s: %s %d has %d bytes" % (where, name, i, len(key)))
            if i and key <= keys[i - 1]:
                self.problem(
                    "%s: %s %d (%s) is not after %s %d (%s)"
                    % (where, name, i, _fmt_key(key), name, i - 1, _fmt_key(keys[i - 1]))
                )
            if lo is not None and (key <= lo if separators else key < lo):
                self.problem("%s: %s %s is below its parent's bound %s" % (where, name, _fmt_key(key), _fmt_key(lo)))
            if hi is not None and key >= hi:
                self.problem("%s: %s %s is not below its parent's bound %s" % (where, name, _fmt_key(key), _fmt_key(hi)))

    def _overflow(self, ref, what):
        remaining = ref.length
        pno = ref.page
        hops = 0
        while True:
            if not self.claim(pno, what):
                return
            page = self.read(pno, what)
            if page is None:
                return
            try:
                data, pno_next = decode_overflow(page)
            except PageFormatError as e:
                self.problem("page %d (%s): %s" % (pno, what, e))
                return
            remaining -= len(data)
            hops += 1
            if not data:
                self.problem("page %d (%s) holds no data" % (pno, what))
                return
            if remaining <= 0 or not pno_next or hops > self.npages:
                break
            pno = pno_next
        if remaining < 0:
            self.problem("%s: the chain holds %d bytes more than the value's %d" % (what, -remaining, ref.length))
        elif remaining > 0:
            self.problem("%s: the chain ends at page %d, %d bytes short of the value's %d" % (what, pno, remaining, ref.length))
        elif pno_next:
            self.problem("%s: the chain goes on past page %d after the value is complete" % (what, pno))

    def freelist(self, meta):
        free = set()
        pno = meta.freelist
        count = 0
        while pno:
            if not self.claim(pno, "free-list page"):
                break
            page = self.read(pno, "free-list page")
            if page is None:
                break
            try:
                entries, pno_next = decode_freelist(page)
            except PageFormatError as e:
                self.problem("page %d (free-list page): %s" % (pno, e))
                break
            for entry in entries:
                count += 1
                if not FIRST_DATA_PAGE <= entry < self.npages:
                    self.problem("free-list page %d lists page %d, outside the data pages" % (pno, entry))
                elif entry in free:
                    self.problem("page %d is on the free list twice" % entry)
                else:
                    free.add(entry)
            pno = pno_next
        if count != meta.nfree:
            self.problem("the free list holds %d pages; the meta page says %d" % (count, meta.nfree))
        return free


def _ranges(pages):
    pages = sorted(pages)
    out = []
    start = prev = pages[0]
    for p in pages[1:]:
        if p != prev + 1:
            out.append((start, prev))
            start = p
        prev = p
    out.append((start, prev))
    return ", ".join(str(a) if a == b else "%d-%d" % (a, b) for a, b in out[:20]) + (
        ", ..." if len(out) > 20 else ""
    )


def check_file(path, lock=True):
    """Check the B+Tree file at ``path`` (or ``path/data.btree``); return a
    `Report`.  With ``lock`` a shared flock makes sure no writer is active."""
    if os.path.isdir(path):
        path = os.path.join(path, "data.btree")
    report = Report(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        report.problem("cannot open: %s" % e.strerror)
        report.fatal = True
        return report
    try:
        if lock:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                report.problem("in use by another process (stop it, or pass --no-lock to check anyway)")
                report.fatal = True
                return report
        _check(fd, report)
    finally:
        os.close(fd)
    return report


def _check(fd, report):
    size = os.fstat(fd).st_size
    head = os.pread(fd, 2 * PAGE_SIZE, 0)
    results = [decode_meta(head[:PAGE_SIZE]), decode_meta(head[PAGE_SIZE : 2 * PAGE_SIZE])]
    valid = [(slot, meta) for slot, (meta, _) in enumerate(results) if meta is not None]
    if not valid:
        if all(reason == "not ours" for _, reason in results):
            report.problem("not a geocachedb B+Tree file (no meta page with our magic)")
            report.fatal = True
        else:
            report.problem(
                "both meta pages are damaged (page 0: %s; page 1: %s)" % (results[0][1], results[1][1])
            )
        return
    slot, meta = max(valid, key=lambda sm: sm[1].txn)
    for other, (m, reason) in enumerate(results):
        if m is None:
            report.warn("meta page %d is damaged (%s); meta page %d (txn %d) is current" % (other, reason, slot, meta.txn))
    report.info = {
        "txn": meta.txn,
        "meta_page": slot,
        "keys": meta.keys,
        "depth": meta.depth,
        "pages": meta.npages,
        "free_pages": meta.nfree,
        "applied_index": meta.applied,
        "bytes": size,
    }
    if size < meta.npages * PAGE_SIZE:
        report.problem(
            "truncated: %d bytes, but txn %d uses %d pages (%d bytes)"
            % (size, meta.txn, meta.npages, meta.npages * PAGE_SIZE)
        )
        return
    if size > meta.npages * PAGE_SIZE:
        report.warn("%d bytes past the last page of txn %d (an interrupted commit)" % (size - meta.npages * PAGE_SIZE, meta.txn))
    walker = _Walker(fd, meta, report.problem)
    nkeys = walker.tree(meta)
    if nkeys != meta.keys:
        report.problem("the tree holds %d keys; the meta page says %d" % (nkeys, meta.keys))
    free = walker.freelist(meta)
    both = free & set(walker.owner)
    for pno in sorted(both)[:MAX_REPORTED]:
        report.problem("page %d is on the free list but used as %s" % (pno, walker.owner[pno]))
    leaked = set(range(FIRST_DATA_PAGE, meta.npages)) - free - set(walker.owner)
    if leaked:
        report.problem("%d page(s) neither reachable nor on the free list (leaked): %s" % (len(leaked), _ranges(leaked)))
    # The fallback tree: what a damaged current meta page would open.
    others = [(s, m) for s, m in valid if s != slot]
    if others:
        oslot, ometa = others[0]
        if ometa.txn >= meta.txn:
            report.problem("both meta pages claim txn %d" % meta.txn)
        else:
            # After a clean commit the fallback tree is intact: the newest
            # txn wrote only pages it did not use.  After a crash in the
            # middle of a commit it may not be (the crashed txn reused
            # pages only the fallback tree still named), which is harmless
            # while the current meta page is sound: so a warning.
            found = []
            _Walker(fd, ometa, found.append).tree(ometa)
            if found:
                report.warn(
                    "the fallback tree (meta page %d, txn %d) is not intact, as after a crash "
                    "during a commit; %d finding(s), the first: %s" % (oslot, ometa.txn, len(found), found[0])
                )
        report.info["fallback_txn"] = ometa.txn


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m geocachedb.storage.btree.check",
        description="Check a geocachedb B+Tree file (or store directory).",
    )
    parser.add_argument("file")
    parser.add_argument("--no-lock", action="store_true", help="check even if another process has it open")
    parser.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    args = parser.parse_args(argv)
    report = check_file(args.file, lock=not args.no_lock)
    for warning in report.warnings:
        print("%s: warning: %s" % (report.path, warning))
    for problem in report.problems[:MAX_REPORTED]:
        print("%s: %s" % (report.path, problem))
    if len(report.problems) > MAX_REPORTED:
        print("%s: ... and %d more" % (report.path, len(report.problems) - MAX_REPORTED))
    if report.fatal:
        return 2
    if report.problems:
        print("%s: %d problem(s) found" % (report.path, len(report.problems)))
        return 1
    if not args.quiet:
        info = report.info
        print(
            "%s: ok: txn %d, %d keys, depth %d, %d pages (%d free), applied index %d"
            % (report.path, info["txn"], info["keys"], info["depth"], info["pages"], info["free_pages"], info["applied_index"])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
