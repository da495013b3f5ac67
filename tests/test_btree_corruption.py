"""Damaged B+Tree files: a clear error naming the file, never a wrong answer.

Part one damages files the way the world does (truncation, a flipped
byte, a file that is not ours) and checks what opening and reading say.
Part two forges pages with valid checksums but a broken tree -- what only
a bug could write -- and checks that the checker finds each one and names
the page.
"""

import os
import random
import subprocess
import sys
from bisect import bisect_right

from twisted.trial.unittest import SynchronousTestCase

from geocachedb.storage import open_storage
from geocachedb.storage.btree import (
    BTreeFileError,
    BTreeStorage,
    CorruptFileError,
    NotABTreeFileError,
)
from geocachedb.storage.btree.check import check_file
from geocachedb.storage.btree.node import (
    PAGE_SIZE,
    Overflow,
    decode_freelist,
    decode_meta,
    decode_node,
    encode_freelist,
    encode_meta,
    encode_node,
    page_txn,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A long common prefix keeps separators long and branches narrow, so a
# few thousand keys make a three-level tree.
PREFIX = b"p" * 100


def K(i):
    return PREFIX + b"key%06d" % i


def run_checker(path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "geocachedb.storage.btree.check", path],
        capture_output=True,
        cwd=REPO,
        env=env,
    )
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()


class _Files:
    def tempdir(self):
        return os.path.abspath(self.mktemp())

    def make_store(self, nkeys=3000, overflow=True):
        directory = self.tempdir()
        store = BTreeStorage(directory)
        rng = random.Random(3)
        items = [(K(i), rng.randbytes(rng.randrange(20, 200))) for i in range(nkeys)]
        for i in range(0, nkeys, 500):
            store.apply_batch(items[i : i + 500], [], i // 500 + 1)
        if overflow:
            store.apply_batch([(K(100), rng.randbytes(30000))], [], 100)
        store.apply_batch([], [K(i) for i in range(0, nkeys, 7)], 101)
        path = store.file
        store.close()
        return directory, path

    def meta(self, path):
        with open(path, "rb") as f:
            metas = [decode_meta(f.read(PAGE_SIZE))[0], decode_meta(f.read(PAGE_SIZE))[0]]
        return max((m for m in metas if m), key=lambda m: m.txn)

    def read_page(self, path, pno):
        with open(path, "rb") as f:
            f.seek(pno * PAGE_SIZE)
            return f.read(PAGE_SIZE)

    def write_page(self, path, pno, page):
        with open(path, "r+b") as f:
            f.seek(pno * PAGE_SIZE)
            f.write(page)

    def flip(self, path, offset):
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0x10]))


class DamagedFileTests(_Files, SynchronousTestCase):
    def assertOpenFails(self, directory, exc, words):
        with self.assertRaises(exc) as caught:
            BTreeStorage(directory)
        message = str(caught.exception)
        self.assertTrue(message.startswith(os.path.join(directory, "data.btree")), message)
        self.assertIn(words, message)
        self.assertIsInstance(caught.exception, BTreeFileError)

    def test_truncated_file_is_refused(self):
        directory, path = self.make_store()
        os.truncate(path, os.path.getsize(path) // 2)
        self.assertOpenFails(directory, CorruptFileError, "truncated")
        code, out = run_checker(path)
        self.assertEqual(code, 1, out)
        self.assertIn("truncated", out)

    def test_file_truncated_inside_its_meta_pages_is_refused(self):
        directory, path = self.make_store(nkeys=10, overflow=False)
        os.truncate(path, 100)
        self.assertOpenFails(directory, CorruptFileError, "truncated")

    def test_empty_file_is_not_ours(self):
        directory = self.tempdir()
        os.makedirs(directory)
        open(os.path.join(directory, "data.btree"), "wb").close()
        self.assertOpenFails(directory, NotABTreeFileError, "not a geocachedb B+Tree file")

    def test_a_file_that_is_not_ours_is_refused(self):
        for content in (os.urandom(3 * PAGE_SIZE), b"hello world\n" * 2000, b"\0" * (4 * PAGE_SIZE)):
            directory = self.tempdir()
            os.makedirs(directory)
            with open(os.path.join(directory, "data.btree"), "wb") as f:
                f.write(content)
            self.assertOpenFails(directory, NotABTreeFileError, "not a geocachedb B+Tree file")
            code, out = run_checker(directory)
            self.assertEqual(code, 2, out)
            self.assertIn("not a geocachedb B+Tree file", out)

    def test_an_lmdb_file_is_refused(self):
        lmdb_dir = self.tempdir()
        store = open_storage("lmdb", lmdb_dir)
        store.put(b"k", b"v")
        store.close()
        directory = self.tempdir()
        os.makedirs(directory)
        with open(os.path.join(lmdb_dir, "data.mdb"), "rb") as src:
            with open(os.path.join(directory, "data.btree"), "wb") as dst:
                dst.write(src.read())
        self.assertOpenFails(directory, NotABTreeFileError, "not a geocachedb B+Tree file")

    def test_flipped_byte_in_the_older_meta_page_changes_nothing(self):
        directory, path = self.make_store(nkeys=200, overflow=False)
        store = BTreeStorage(directory)
        expected = store.scan()
        older = 1 - store._pager.txn % 2
        store.close()
        self.flip(path, older * PAGE_SIZE + 30)
        store = BTreeStorage(directory)
        try:
            self.assertEqual(store.scan(), expected)
            self.assertEqual(store.applied_index(), 101)
            self.assertIn("meta page %d is damaged" % older, store._pager.recovery)
        finally:
            store.close()

    def test_flipped_byte_in_the_newest_meta_page_opens_the_previous_commit(self):
        # Indistinguishable from a meta page torn by a crash, so the rule
        # for those applies: the other meta page, i.e. the commit before,
        # with its own applied index, so Raft re-applies what is missing.
        # It is noted (logged, and the checker warns), never silent.
        directory, path = self.make_store(nkeys=200, overflow=False)
        store = BTreeStorage(directory)
        before = store.scan()
        store.apply_batch([(b"new", b"x")], [K(1)], 102)
        newest = store._pager.txn % 2
        store.close()
        for offset in (0, 20, 40, 63, 100, PAGE_SIZE - 1):
            with open(path, "rb") as f:
                pristine = f.read()
            self.flip(path, newest * PAGE_SIZE + offset)
            store = BTreeStorage(directory)
            try:
                self.assertEqual(store.applied_index(), 101)
                self.assertEqual(store.scan(), before)
                self.assertIn("meta page %d is damaged" % newest, store._pager.recovery)
            finally:
                store.close()
            report = check_file(path)
            self.assertEqual(report.problems, [])
            self.assertIn("meta page %d is damaged" % newest, report.warnings[0])
            with open(path, "wb") as f:
                f.write(pristine)

    def test_flipped_bytes_in_both_meta_pages_are_refused(self):
        directory, path = self.make_store(nkeys=50, overflow=False)
        self.flip(path, 30)
        self.flip(path, PAGE_SIZE + 30)
        self.assertOpenFails(directory, CorruptFileError, "both meta pages are damaged")
        code, out = run_checker(path)
        self.assertEqual(code, 1, out)
        self.assertIn("both meta pages are damaged", out)

    def leaf_of(self, store, key):
        pager = store._pager
        pno = pager.root
        node = pager.node(pno)
        while node.__class__.__name__ == "Branch":
            pno = node.children[bisect_right(node.keys, key)]
            node = pager.node(pno)
        return pno, node

    def test_flipped_byte_in_a_leaf_is_an_error_on_read_not_a_wrong_answer(self):
        directory, path = self.make_store(overflow=False)
        store = BTreeStorage(directory)
        leaf_pno, _ = self.leaf_of(store, K(2000))
        good = store.get(K(1))
        store.close()
        self.flip(path, leaf_pno * PAGE_SIZE + 2000)
        store = BTreeStorage(directory)
        try:
            self.assertEqual(store.get(K(1)), good)  # another leaf: fine
            with self.assertRaises(CorruptFileError) as caught:
                store.get(K(2000))
            self.assertIn("page %d fails its checksum" % leaf_pno, str(caught.exception))
            self.assertRaises(CorruptFileError, store.scan)
            self.assertRaises(CorruptFileError, lambda: b"".join(store.snapshot_out()))
        finally:
            store.close()
        code, out = run_checker(path)
        self.assertEqual(code, 1, out)
        self.assertIn("page %d" % leaf_pno, out)
        self.assertIn("fails its checksum", out)

    def test_flipped_byte_in_an_overflow_page_is_an_error_on_read(self):
        directory, path = self.make_store()
        store = BTreeStorage(directory)
        _, leaf = self.leaf_of(store, K(100))
        ref = leaf.vals[leaf.keys.index(K(100))]
        self.assertIsInstance(ref, Overflow)
        second = store._pager.overflow_pages(ref)[1]
        store.close()
        self.flip(path, second * PAGE_SIZE + 100)
        store = BTreeStorage(directory)
        try:
            with self.assertRaises(CorruptFileError) as caught:
                store.get(K(100))
            self.assertIn("page %d" % second, str(caught.exception))
        finally:
            store.close()


class CheckerFindsForgedTreesTests(_Files, SynchronousTestCase):
    """Every page here has a valid checksum; the tree is what is wrong."""

    def setUp(self):
        self.directory, self.path = self.make_store()
        self.metadata = self.meta(self.path)
        report = check_file(self.path)
        self.assertEqual((report.problems, report.warnings), ([], []))
        self.assertEqual(report.info["depth"], 3)

    def node(self, pno):
        page = self.read_page(self.path, pno)
        return decode_node(page), page_txn(page)

    def forge(self, pno, mutate, txn=None):
        node, written = self.node(pno)
        mutate(node)
        self.write_page(self.path, pno, encode_node(node, written if txn is None else txn))

    def forge_meta(self, **changes):
        meta = self.metadata
        for name, value in changes.items():
            setattr(meta, name, value)
        self.write_page(self.path, meta.txn % 2, encode_meta(meta))

    def leaves(self):
        out = []
        stack = [self.metadata.root]
        while stack:
            pno = stack.pop()
            node, _ = self.node(pno)
            if node.__class__.__name__ == "Branch":
                stack.extend(reversed(node.children))
            else:
                out.append(pno)
        return out

    def assertFinds(self, *fragments):
        report = check_file(self.path)
        self.assertFalse(report.ok)
        text = "\n".join(report.problems)
        for fragment in fragments:
            self.assertIn(fragment, text)
        code, out = run_checker(self.path)
        self.assertEqual(code, 1, out)
        self.assertIn("problem(s) found", out)
        return text

    def test_keys_out_of_order_within_a_leaf(self):
        pno = self.leaves()[3]

        def swap(leaf):
            leaf.keys[1], leaf.keys[2] = leaf.keys[2], leaf.keys[1]

        self.forge(pno, swap)
        self.assertFinds("page %d (" % pno, "is not after key 1")

    def test_separator_that_does_not_bound_its_child(self):
        root, _ = self.node(self.metadata.root)

        def bump(branch):
            branch.keys[0] = branch.keys[1] + b"\xff"

        self.forge(self.metadata.root, bump)
        self.assertFinds("page %d (the root): separator 1" % self.metadata.root, "its parent's bound")

    def test_leaves_swapped_in_their_parent(self):
        root, _ = self.node(self.metadata.root)
        parent = root.children[0]

        def swap(branch):
            branch.children[0], branch.children[1] = branch.children[1], branch.children[0]

        self.forge(parent, swap)
        self.assertFinds("leaf chain", "its parent's bound")

    def test_page_referenced_twice_and_page_leaked(self):
        root, _ = self.node(self.metadata.root)
        parent = root.children[0]
        node, _ = self.node(parent)
        lost = node.children[1]

        def alias(branch):
            branch.children[1] = branch.children[0]

        self.forge(parent, alias)
        self.assertFinds("is used twice", "leaked): %d" % lost)

    def test_page_missing_from_the_free_list_is_a_leak(self):
        self.assertTrue(self.metadata.freelist)
        entries, nxt = decode_freelist(self.read_page(self.path, self.metadata.freelist))
        gone = entries.pop()
        self.write_page(
            self.path, self.metadata.freelist, encode_freelist(entries, nxt, page_txn(self.read_page(self.path, self.metadata.freelist)))
        )
        self.forge_meta(nfree=self.metadata.nfree - 1)
        self.assertFinds("leaked): %d" % gone)

    def test_used_page_on_the_free_list(self):
        used = self.leaves()[5]
        page = self.read_page(self.path, self.metadata.freelist)
        entries, nxt = decode_freelist(page)
        self.write_page(self.path, self.metadata.freelist, encode_freelist(entries + [used], nxt, page_txn(page)))
        self.forge_meta(nfree=self.metadata.nfree + 1)
        self.assertFinds("page %d is on the free list but used as" % used)

    def test_free_list_count_disagrees_with_the_meta_page(self):
        self.forge_meta(nfree=self.metadata.nfree + 3)
        self.assertFinds("the free list holds")

    def forge_overflow_length(self, delta):
        for pno in self.leaves():
            node, _ = self.node(pno)
            if any(isinstance(v, Overflow) for v in node.vals):
                break

        def change(leaf):
            for value in leaf.vals:
                if isinstance(value, Overflow):
                    value.length += delta

        self.forge(pno, change)

    def test_overflow_chain_longer_than_its_value(self):
        self.forge_overflow_length(-5000)
        self.assertFinds("overflow page of key", "more than the value's 25000")

    def test_overflow_chain_shorter_than_its_value(self):
        self.forge_overflow_length(+9000)
        self.assertFinds("overflow page of key", "bytes short of the value's")

    def test_key_count_disagrees_with_the_meta_page(self):
        keys = self.metadata.keys
        self.forge_meta(keys=keys + 1)
        self.assertFinds("the tree holds %d keys; the meta page says %d" % (keys, keys + 1))

    def test_under_full_leaf(self):
        pno = self.leaves()[4]

        def gut(leaf):
            del leaf.keys[1:]
            del leaf.vals[1:]

        self.forge(pno, gut)
        self.assertFinds("page %d (" % pno, "under-full")

    def test_page_written_after_the_tree_it_is_in(self):
        pno = self.leaves()[2]
        self.forge(pno, lambda leaf: None, txn=self.metadata.txn + 1)
        self.assertFinds("page %d (" % pno, "was written by txn %d, after this tree's txn" % (self.metadata.txn + 1))

    def test_leaf_where_a_branch_belongs(self):
        # Point the root straight at the first leaf under its second child:
        # that leaf is now met first at depth 2.
        root, _ = self.node(self.metadata.root)
        branch, _ = self.node(root.children[1])
        leaf = branch.children[0]
        self.forge(self.metadata.root, lambda branch: branch.children.__setitem__(1, leaf))
        self.assertFinds("is a leaf at depth 2; the tree's leaves are at depth 3")

    def test_wrong_page_type_in_the_tree(self):
        self.forge(self.metadata.root, lambda branch: branch.children.__setitem__(1, self.metadata.freelist))
        self.assertFinds("expected a tree node, found a free-list page")

