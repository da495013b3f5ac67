"""The B+Tree itself: lookup, insert with splits, delete with merge or
redistribution, ordered iteration, bulk load and freeing a whole tree.

It works on decoded nodes handed out by the `Pager` and never touches the
file.  Writes happen inside a pager transaction and are copy-on-write: the
path from the root to a leaf is made writable top down (`Pager.writable`
copies a node to a fresh page unless the transaction already owns it), so a
node owned by the transaction always has owned ancestors, and a batch that
touches the same leaf twice copies it once.

Separator rule: child ``i`` of a branch holds the keys ``k`` with
``keys[i-1] <= k < keys[i]``; a lookup follows ``bisect_right``.

Iteration does not use sibling links (they would make every copy-on-write
of a leaf copy its left neighbour too); it walks a stack of (branch, index)
from a given root, which is also what lets a snapshot read an old, pinned
root while newer transactions commit.
"""

from bisect import bisect_left, bisect_right

from geocachedb.storage.btree.node import (
    MAX_INLINE_ENTRY,
    MIN_FILL,
    NODE_LIMIT,
    Branch,
    Leaf,
    Overflow,
    entry_size,
    shortest_separator,
)


class BTree:
    def __init__(self, pager):
        self.pager = pager

    # -- reading -------------------------------------------------------------------

    def get(self, key):
        pager = self.pager
        cache = pager._cache
        pno = pager.root
        node = cache.get(pno) or pager.node(pno)
        while node.__class__ is Branch:
            pno = node.children[bisect_right(node.keys, key)]
            node = cache.get(pno) or pager.node(pno)
        keys = node.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            value = node.vals[i]
            return value if value.__class__ is bytes else pager.read_overflow(value)
        return None

    def contains(self, key):
        """Like `get` but without reading an overflow value."""
        pager = self.pager
        node = pager.node(pager.root)
        while node.__class__ is Branch:
            node = pager.node(node.children[bisect_right(node.keys, key)])
        i = bisect_left(node.keys, key)
        return i < len(node.keys) and node.keys[i] == key

    def leaves(self, root, lo=b""):
        """Yield the leaves of the tree at ``root`` in key order, starting
        with the one that would hold ``lo``."""
        node_of = self.pager.node
        stack = []
        node = node_of(root)
        while node.__class__ is Branch:
            i = bisect_right(node.keys, lo)
            stack.append((node, i))
            node = node_of(node.children[i])
        yield node
        while stack:
            branch, i = stack.pop()
            i += 1
            if i < len(branch.children):
                stack.append((branch, i))
                node = node_of(branch.children[i])
                while node.__class__ is Branch:
                    stack.append((node, 0))
                    node = node_of(node.children[0])
                yield node

    def items(self, root, lo=b"", hi=None):
        """Yield ``(key, value)`` for ``lo <= key < hi`` in key order."""
        read_overflow = self.pager.read_overflow
        first = True
        for leaf in self.leaves(root, lo):
            keys = leaf.keys
            vals = leaf.vals
            start = bisect_left(keys, lo) if first else 0
            first = False
            end = len(keys)
            done = False
            if hi is not None and end and keys[-1] >= hi:
                end = bisect_left(keys, hi, start)
                done = True
            if leaf.novf:
                for i in range(start, end):
                    value = vals[i]
                    yield keys[i], value if value.__class__ is bytes else read_overflow(value)
            else:
                yield from zip(keys[start:end], vals[start:end])
            if done:
                return

    def scan(self, lo, hi, limit):
        """A list of at most ``limit`` pairs in ``[lo, hi)`` (the fast path
        of `items` for the IStorage scan)."""
        out = []
        if limit is not None and limit <= 0:
            return out
        read_overflow = self.pager.read_overflow
        first = True
        for leaf in self.leaves(self.pager.root, lo):
            keys = leaf.keys
            start = bisect_left(keys, lo) if first else 0
            first = False
            end = len(keys)
            done = False
            if hi is not None and end and keys[-1] >= hi:
                end = bisect_left(keys, hi, start)
                done = True
            if limit is not None and end - start >= limit - len(out):
                end = start + limit - len(out)
                done = True
            if leaf.novf:
                vals = leaf.vals
                for i in range(start, end):
                    value = vals[i]
                    out.append((keys[i], value if value.__class__ is bytes else read_overflow(value)))
            else:
                out.extend(zip(keys[start:end], leaf.vals[start:end]))
            if done:
                break
        return out

    # -- writing -------------------------------------------------------------------

    def _writable_path(self, key):
        """Descend to ``key``'s leaf making every node on the way writable;
        return ``(path, leaf)`` with path a list of ``(branch, index)``."""
        pager = self.pager
        cache = pager._cache
        # Fast path: a leaf this transaction already owns has owned ancestors.
        trail = []
        pno = pager.root
        node = cache.get(pno) or pager.node(pno)
        while node.__class__ is Branch:
            i = bisect_right(node.keys, key)
            trail.append((pno, node, i))
            pno = node.children[i]
            node = cache.get(pno) or pager.node(pno)
        if pager.owns(pno):
            for bpno, branch, _ in trail:
                pager.touch(bpno, branch)
            pager.touch(pno, node)
            return [(branch, i) for _, branch, i in trail], node
        path = []
        parent = None
        for bpno, branch, i in trail:
            new_pno, branch = pager.writable(bpno)
            if parent is None:
                pager.root = new_pno
            else:
                parent[0].children[parent[1]] = new_pno
            parent = (branch, i)
            path.append(parent)
        new_pno, leaf = pager.writable(pno)
        if parent is None:
            pager.root = new_pno
        else:
            parent[0].children[parent[1]] = new_pno
        return path, leaf

    def put(self, key, value):
        """Insert or replace (inside a transaction)."""
        pager = self.pager
        if 6 + len(key) + len(value) > MAX_INLINE_ENTRY:
            value = Overflow(pager.write_overflow(value), len(value))
        path, leaf = self._writable_path(key)
        keys = leaf.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            old = leaf.vals[i]
            if old.__class__ is Overflow:
                pager.free_overflow(old)
                leaf.novf -= 1
            leaf.size += entry_size(key, value) - entry_size(key, old)
            leaf.vals[i] = value
        else:
            keys.insert(i, key)
            leaf.vals.insert(i, value)
            leaf.size += entry_size(key, value)
            pager.keys += 1
        if value.__class__ is Overflow:
            leaf.novf += 1
        # A smaller value replacing a bigger one can leave the leaf
        # under-full: that needs fixing as much as an overfull one.
        if leaf.size > NODE_LIMIT or (leaf.size < MIN_FILL and path):
            self._rebalance(path, leaf)

    def delete(self, key):
        """Remove ``key`` (inside a transaction); True if it was there."""
        # Look before copying anything: deleting a missing key writes nothing.
        if not self.contains(key):
            return False
        pager = self.pager
        path, leaf = self._writable_path(key)
        i = bisect_left(leaf.keys, key)
        old = leaf.vals.pop(i)
        del leaf.keys[i]
        leaf.size -= entry_size(key, old)
        if old.__class__ is Overflow:
            pager.free_overflow(old)
            leaf.novf -= 1
        pager.keys -= 1
        if leaf.size < MIN_FILL:
            self._rebalance(path, leaf)
        return True

    def _rebalance(self, path, node):
        """Restore the size bounds from ``node`` up to the root: split what
        is too big, merge or refill what is too small.  Every node on
        ``path`` is writable."""
        pager = self.pager
        while path:
            parent, i = path.pop()
            if node.size > NODE_LIMIT:
                sep, right = _split(node)
                parent.keys.insert(i, sep)
                parent.children.insert(i + 1, pager.add_node(right))
                parent.size += 6 + len(sep)
            elif node.size < MIN_FILL:
                self._fix_underflow(parent, i)
            node = parent
        # ``node`` is the root.
        if node.size > NODE_LIMIT:
            sep, right = _split(node)
            pager.root = pager.add_node(Branch([sep], [pager.root, pager.add_node(right)]))
            pager.depth += 1
        elif node.__class__ is Branch and not node.keys:
            old = pager.root
            pager.root = node.children[0]
            pager.free(old)
            pager.depth -= 1

    def _fix_underflow(self, parent, i):
        """Child ``i`` of ``parent`` is under-full: merge it with a
        neighbour, or share the neighbour's entries when both do not fit."""
        pager = self.pager
        li = i - 1 if i > 0 else i
        lpno, left = pager.writable(parent.children[li])
        parent.children[li] = lpno
        rpno, right = pager.writable(parent.children[li + 1])
        parent.children[li + 1] = rpno
        sep = parent.keys[li]
        joined = _join(left, sep, right)
        if joined is not None:
            del parent.keys[li]
            del parent.children[li + 1]
            parent.size -= 6 + len(sep)
            pager.free(rpno)
            return
        new_sep = _redistribute(left, sep, right)
        parent.keys[li] = new_sep
        parent.size += len(new_sep) - len(sep)

    # -- whole trees -----------------------------------------------------------------

    def free_tree(self, root):
        """Free every page of the tree at ``root`` (including overflow)."""
        pager = self.pager
        stack = [root]
        while stack:
            pno = stack.pop()
            node = pager.node(pno)
            if node.__class__ is Branch:
                stack.extend(node.children)
            elif node.novf:
                for value in node.vals:
                    if value.__class__ is Overflow:
                        pager.free_overflow(value)
            pager.free(pno)

    def bulk_load(self, items):
        """Build a new tree from ``items`` (sorted, distinct keys, already
        checked) and make it the root; the old tree must have been freed.
        Leaves are filled full, as an append-only load would leave them.
        Nodes are handed to the pager as soon as they are complete, so a
        large load spills to disk instead of growing in memory."""
        pager = self.pager
        level = []  # [(low separator, pno)]; the first low separator is None
        leaf = Leaf()
        low = None
        prev_key = None
        count = 0
        for key, value in items:
            if 6 + len(key) + len(value) > MAX_INLINE_ENTRY:
                value = Overflow(pager.write_overflow(value), len(value))
            size = entry_size(key, value)
            if leaf.size + size > NODE_LIMIT:
                level.append((low, pager.add_node(leaf)))
                low = shortest_separator(prev_key, key)
                leaf = Leaf()
            leaf.keys.append(key)
            leaf.vals.append(value)
            leaf.size += size
            if value.__class__ is Overflow:
                leaf.novf += 1
            prev_key = key
            count += 1
            if count % 1024 == 0:
                pager.maybe_spill()
        level.append((low, pager.add_node(leaf)))
        self._fix_tail(level)
        depth = 1
        while len(level) > 1:
            level = self._branch_level(level)
            depth += 1
        pager.root = level[0][1]
        pager.depth = depth
        pager.keys = count

    def _branch_level(self, level):
        """Group ``[(low separator, pno)]`` under new branches, filled full."""
        pager = self.pager
        out = []
        branch = Branch([], [level[0][1]], 4)
        low = level[0][0]
        for sep, pno in level[1:]:
            if branch.size + 6 + len(sep) > NODE_LIMIT:
                out.append((low, pager.add_node(branch)))
                branch = Branch([], [pno], 4)
                low = sep
                continue
            branch.keys.append(sep)
            branch.children.append(pno)
            branch.size += 6 + len(sep)
        out.append((low, pager.add_node(branch)))
        self._fix_tail(out)
        pager.maybe_spill()
        return out

    def _fix_tail(self, level):
        """A bulk-loaded level ends with whatever was left over: make its
        last node legal (non-empty, not under-full) by merging it into, or
        sharing with, the node before it."""
        if len(level) < 2:
            return
        pager = self.pager
        sep, last_pno = level[-1]
        last = pager.node(last_pno)
        if last.size >= MIN_FILL and (last.__class__ is Leaf or last.keys):
            return
        prev_pno = level[-2][1]
        prev = pager.node(prev_pno)
        pager.touch(prev_pno, prev)
        if _join(prev, sep, last) is not None:
            pager.free(last_pno)
            del level[-1]
            return
        pager.touch(last_pno, last)
        level[-1] = (_redistribute(prev, sep, last), last_pno)


def _split(node):
    """Split ``node`` in place by bytes; return ``(separator, right)``."""
    if node.__class__ is Leaf:
        keys = node.keys
        m = _leaf_split_point(node)
        right = Leaf(keys[m:], node.vals[m:])
        sep = shortest_separator(keys[m - 1], keys[m])
        del keys[m:]
        del node.vals[m:]
        node.size -= right.size
        node.novf -= right.novf
        return sep, right
    keys = node.keys
    m = _branch_split_point(keys)
    sep = keys[m]
    right = Branch(keys[m + 1 :], node.children[m + 1 :])
    del keys[m:]
    del node.children[m + 1 :]
    node.size = 4 + sum(6 + len(k) for k in keys)
    return sep, right


def _leaf_split_point(leaf):
    """The index of the first entry of the right half: the first entry that
    takes the left half past half the bytes (both halves non-empty)."""
    half = leaf.size // 2
    acc = 0
    keys = leaf.keys
    vals = leaf.vals
    for m in range(len(keys)):
        acc += entry_size(keys[m], vals[m])
        if acc >= half:
            return min(max(m, 1), len(keys) - 1)
    return len(keys) - 1


def _branch_split_point(keys):
    """The index of the separator that moves up (both sides keep >= 1 key
    when there are >= 3)."""
    total = sum(6 + len(k) for k in keys)
    acc = 0
    for m, key in enumerate(keys):
        acc += 6 + len(key)
        if acc >= total // 2:
            return min(max(m, 1), len(keys) - 2)
    return len(keys) // 2


def _join(left, sep, right):
    """Merge ``right`` (and the separator between them) into ``left`` if the
    result fits a page; return left or None."""
    if left.__class__ is Leaf:
        if left.size + right.size > NODE_LIMIT:
            return None
        left.keys.extend(right.keys)
        left.vals.extend(right.vals)
        left.size += right.size
        left.novf += right.novf
        return left
    size = left.size + right.size - 4 + 6 + len(sep)
    if size > NODE_LIMIT:
        return None
    left.keys.append(sep)
    left.keys.extend(right.keys)
    left.children.extend(right.children)
    left.size = size
    return left


def _redistribute(left, sep, right):
    """Share the entries of two neighbours evenly; return the new separator."""
    if left.__class__ is Leaf:
        keys = left.keys + right.keys
        vals = left.vals + right.vals
        whole = Leaf(keys, vals, left.size + right.size, left.novf + right.novf)
        new_sep, tail = _split(whole)
        left.keys, left.vals, left.size, left.novf = whole.keys, whole.vals, whole.size, whole.novf
        right.keys, right.vals, right.size, right.novf = tail.keys, tail.vals, tail.size, tail.novf
        return new_sep
    keys = left.keys + [sep] + right.keys
    children = left.children + right.children
    whole = Branch(keys, children)
    new_sep, tail = _split(whole)
    left.keys, left.children, left.size = whole.keys, whole.children, whole.size
    right.keys, right.children, right.size = tail.keys, tail.children, tail.size
    return new_sep
