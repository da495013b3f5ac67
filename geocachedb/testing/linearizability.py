"""A linearizability checker for key-value histories.

Sits at the very end of a simulation (`geocachedb.testing.sim`): every client
operation the workload issued is recorded here as an invocation and a
completion, and `check` decides whether some sequential order of the
operations, consistent with real time, explains every observed result.

The search is Wing & Gong's, with Lowe's "just-in-time linearisation" and
memoisation, as Porcupine does it:

* the history is split per key (a key is an independent register, so the
  history is linearizable iff each key's sub-history is — this is what makes
  the search tractable);
* the call and return events of a key are walked in time order; at a call
  the search tries to linearize that operation now (apply it to the model; if
  the model accepts the observed output it is removed from the event list
  and the walk restarts from the head); reaching a return event of an
  operation not yet linearized means the current prefix was wrong, so the
  search backtracks;
* every (set of linearized operations, model state) pair already explored is
  remembered, so equivalent interleavings are explored once.

The model is a register per key with ``put`` (output ignored), ``get``
(output: the value or None) and ``delete`` (output: whether the key
existed).  An operation whose outcome is unknown (the client timed out, or
was told Unavailable, on a write) has ``ret=None``: it may have taken effect
at any point after its invocation, or never — which the search expresses as
"linearized after everything else".  A read that failed simply did not
happen and should not be recorded at all (`History.fail`).

Events at the same time are treated as concurrent (calls sort before
returns), the lenient choice; the simulator stamps events with a strictly
increasing counter so the question never arises there.
"""

import math

PUT = "put"
GET = "get"
DELETE = "delete"

_KINDS = (PUT, GET, DELETE)


class Operation:
    """One client operation.

    ``value`` is the input (the value a put writes, else None); ``output``
    is what the client saw: None for a put, the value (or None) for a get,
    a bool for a delete.  ``ret`` is None when the outcome is unknown, and
    then ``output`` is ignored.
    """

    __slots__ = ("id", "client", "kind", "key", "value", "output", "call", "ret")

    def __init__(self, client, kind, key, value=None, output=None, call=0, ret=None, id=None):
        if kind not in _KINDS:
            raise ValueError("unknown operation kind %r" % (kind,))
        self.id = id
        self.client = client
        self.kind = kind
        self.key = key
        self.value = value
        self.output = output
        self.call = call
        self.ret = ret

    @property
    def unknown(self):
        return self.ret is None

    def describe(self):
        if self.kind == PUT:
            text = "put(%r, %s)" % (self.key, _short(self.value))
        else:
            text = "%s(%r)" % (self.kind, self.key)
        if self.unknown:
            text += " -> ?"
        elif self.kind != PUT:
            text += " -> %s" % (_short(self.output),)
        ret = "inf" if self.unknown else self.ret
        return "op %s by client %s: %s [%s, %s]" % (self.id, self.client, text, self.call, ret)

    def __repr__(self):
        return "<Operation %s>" % self.describe()


def _short(value, limit=24):
    """repr of a value, long ones cut (the simulator pads its values)."""
    if isinstance(value, bytes) and len(value) > limit:
        return "%r...(%d bytes)" % (value[:limit], len(value))
    return repr(value)


def step(state, op):
    """The register model: return (accepted, new_state) for applying ``op``
    to a key whose current value is ``state`` (None: absent)."""
    if op.kind == PUT:
        return True, op.value
    if op.kind == GET:
        return op.unknown or op.output == state, state
    # DELETE
    return op.unknown or bool(op.output) == (state is not None), None


class CheckResult:
    """The verdict of `check`.

    ``ok`` is True (linearizable), False (not), or None (the search gave up
    after ``max_steps``; nothing is proven).  On failure ``key`` is the
    offending key and ``explanation`` a human-readable account: the longest
    linearizable prefix found, the model state after it, and the operations
    that could not be placed next.  ``linearization`` (on success) maps each
    key to the order found, as a list of operation ids.
    """

    def __init__(self, ok, key=None, explanation="", ops=(), linearization=None):
        self.ok = ok
        self.key = key
        self.explanation = explanation
        self.ops = list(ops)
        self.linearization = linearization or {}

    def __bool__(self):
        return self.ok is True

    def __repr__(self):
        return "CheckResult(ok=%r, key=%r)" % (self.ok, self.key)


class _Event:
    """A node of the doubly linked list of call/return events."""

    __slots__ = ("op", "is_call", "match", "prev", "next")

    def __init__(self, op, is_call):
        self.op = op
        self.is_call = is_call
        self.match = None  # the call's return event, or None
        self.prev = None
        self.next = None


def _build_events(ops):
    """A doubly linked list (with a sentinel head) of call and return
    events in time order.  Unknown-outcome operations return at infinity."""
    raw = []
    for n, op in enumerate(ops):
        ret = math.inf if op.unknown else op.ret
        if ret < op.call:
            raise ValueError("%s returns before it is invoked" % op.describe())
        call = _Event(op, True)
        back = _Event(op, False)
        call.match = back
        # Sort key: time, then calls before returns (lenient on ties), then
        # a stable tiebreak.
        raw.append(((op.call, 0, n), call))
        raw.append(((ret, 1, n), back))
    raw.sort(key=lambda pair: pair[0])
    head = _Event(None, False)
    prev = head
    for _, event in raw:
        prev.next = event
        event.prev = prev
        prev = event
    return head


def _lift(call):
    """Remove a call event and its return event from the list."""
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    back = call.match
    back.prev.next = back.next
    if back.next is not None:
        back.next.prev = back.prev


def _unlift(call):
    """Put back what `_lift` removed (in reverse order)."""
    back = call.match
    back.prev.next = back
    if back.next is not None:
        back.next.prev = back
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


class _Hidden:
    """The model state after a put whose value no read ever returned."""

    def __repr__(self):
        return "<a value never read>"


_HIDDEN = _Hidden()


def _reductions(ops, index):
    """Two exact reductions of the search space, which matter when a
    history has many writes of unknown outcome (each stays concurrent with
    everything after it, so without them the search is exponential):

    * a put whose value no read returned leaves the register in a state that
      nothing can tell apart from any other such state, so they all map to
      one state (`_HIDDEN`) and the memo table merges them;
    * unknown-outcome operations with the same effect (puts of unread
      values; deletes) are interchangeable, so they are linearized in the
      order they were invoked: swapping two of them in a linearization
      gives another valid one.

    Returns the ids of the hidden puts and, for each interchangeable
    operation, the bit index of the one that must come before it."""
    observed = {op.output for op in ops if op.kind == GET and not op.unknown}
    hidden = {id(op) for op in ops if op.kind == PUT and op.value not in observed}
    classes = {PUT: [], DELETE: []}
    for op in ops:
        if op.unknown and (op.kind == DELETE or id(op) in hidden):
            classes[op.kind].append(op)
    chain = {}
    for members in classes.values():
        members.sort(key=lambda op: (op.call, index[id(op)]))
        for a, b in zip(members, members[1:]):
            chain[id(b)] = index[id(a)]
    return hidden, chain


def check_key(ops, initial=None, max_steps=None):
    """Search one key's history.  Returns (ok, order, failure) where order
    is the list of ops linearized (on success) and failure a tuple
    (prefix, state, blocked) describing the deepest dead end (on failure).
    ok is None if ``max_steps`` ran out."""
    if not ops:
        return True, [], None
    index = {id(op): n for n, op in enumerate(ops)}
    hidden, chain = _reductions(ops, index)
    head = _build_events(ops)
    state = initial
    linearized = 0  # bitmask of linearized ops
    seen = set()
    stack = []  # (call event, state before)
    best = (-1, None)
    steps = 0
    entry = head.next
    while head.next is not None:
        steps += 1
        if max_steps is not None and steps > max_steps:
            return None, None, None
        if entry.is_call:
            op = entry.op
            before = chain.get(id(op))
            if before is not None and not (linearized >> before) & 1:
                # An interchangeable operation invoked earlier goes first.
                entry = entry.next
                continue
            accepted, new_state = step(state, op)
            if accepted:
                if id(op) in hidden:
                    new_state = _HIDDEN
                bit = 1 << index[id(op)]
                key = (linearized | bit, new_state)
                if key not in seen:
                    seen.add(key)
                    stack.append((entry, state))
                    state = new_state
                    linearized |= bit
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # The return of an op not yet linearized: the prefix chosen so
            # far cannot be extended; remember the deepest such dead end for
            # the explanation, then backtrack.
            if len(stack) > best[0]:
                pending = []
                e = head.next
                while e is not None and e is not entry:
                    if e.is_call:
                        pending.append(e.op)
                    e = e.next
                best = (len(stack), ([c.op for c, _ in stack], state, entry.op, pending))
            if not stack:
                return False, None, best[1]
            call, state = stack.pop()
            linearized &= ~(1 << index[id(call.op)])
            _unlift(call)
            entry = call.next
    return True, [c.op for c, _ in stack], None


def _explain(key, failure):
    prefix, state, blocked, pending = failure
    lines = ["key %r: no linearization exists." % (key,)]
    if prefix:
        lines.append("Longest linearizable prefix (%d ops):" % len(prefix))
        for op in prefix:
            lines.append("  " + op.describe())
    else:
        lines.append("Not even the first operation can be linearized.")
    lines.append("Model state after it: %s" % (_short(state),))
    lines.append("This operation must be linearized before it returns, but cannot be:")
    lines.append("  " + blocked.describe())
    others = [op for op in pending if op is not blocked]
    if others:
        lines.append("Other operations that could come next (none fits either):")
        for op in others:
            lines.append("  " + op.describe())
    return "\n".join(lines)


def check(history, max_steps=None):
    """Check a history (an iterable of `Operation`, or a `History`).

    Returns a `CheckResult`.  ``max_steps`` bounds the search per key; when
    it runs out the verdict is ``ok=None``.
    """
    ops = list(history.operations() if isinstance(history, History) else history)
    for n, op in enumerate(ops):
        if op.id is None:
            op.id = n
    by_key = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    orders = {}
    gave_up = None
    for key in sorted(by_key, key=repr):
        key_ops = by_key[key]
        ok, order, failure = check_key(key_ops, max_steps=max_steps)
        if ok is None:
            gave_up = key
            continue
        if not ok:
            involved = list(failure[0]) + [failure[2]] + [
                op for op in failure[3] if op is not failure[2]
            ]
            return CheckResult(False, key, _explain(key, failure), involved)
        orders[key] = [op.id for op in order]
    if gave_up is not None:
        return CheckResult(
            None, gave_up, "key %r: search gave up after %d steps" % (gave_up, max_steps)
        )
    return CheckResult(True, linearization=orders)


class History:
    """Records operations as a workload runs: `invoke` when a client sends
    one, then exactly one of `complete` (the result is known), `unknown`
    (a write timed out or failed in a way that may still take effect; also
    what every still-pending operation becomes at the end) or `fail` (the
    operation certainly did not happen: it is dropped from the history)."""

    def __init__(self):
        self._ops = {}
        self._next = 0

    def invoke(self, client, kind, key, value=None, time=0):
        op = Operation(client, kind, key, value, call=time, id=self._next)
        self._ops[self._next] = op
        self._next += 1
        return op.id

    def complete(self, op_id, output, time):
        op = self._ops[op_id]
        op.output = output
        op.ret = time
        return op

    def unknown(self, op_id):
        op = self._ops[op_id]
        op.ret = None
        op.output = None
        return op

    def fail(self, op_id):
        return self._ops.pop(op_id)

    def get(self, op_id):
        return self._ops[op_id]

    def operations(self):
        return [self._ops[k] for k in sorted(self._ops)]

    def __len__(self):
        return len(self._ops)
