"""The simulated operator: changes the cluster's membership and compacts
logs at random times while the nemesis injects faults (and transfers
leadership: `faults.Nemesis`), through the same entry point as the admin
shell, the CLI and the client: a `member` request to any node, which a
follower forwards to the leader.

Actions (each drawn from the scheduler's RNG, with per-seed weights):

``add-learner``   start a spare node with no configuration (``--join``),
                  then add it as a learner
``promote``       make a learner a voter (refused until it has caught up)
``add-voter``     start a spare and add it as a voter (the leader adds a
                  learner and promotes it once it has caught up)
``remove``        remove a member (often the leader); the cluster keeps at
                  least three voters most of the time (two, rarely)
``rejoin``        add back a node removed earlier: wiped (a new machine under
                  the old name) or with its old data
``compact``       compact a node's log now (besides the automatic,
                  threshold-driven compaction)

A command goes to a random node that is up (often a follower, which
forwards it); a refusal because a change is in progress, or because a new
leader has not committed an entry of its term yet, is retried a little
later, as an operator script would; so is one that found no leader.  At
most one membership command is in flight.

A removed node is either decommissioned (powered off for good, perhaps
added back later) or — when pre-vote or check-quorum is on, which is what
keeps a removed node from disrupting the cluster — sometimes left running,
still believing it is a member, to try.
"""

from geocachedb import errors
from geocachedb.testing.cluster import member_request, request_error

KINDS = ("add-learner", "promote", "add-voter", "remove", "rejoin", "compact")


def _request(kind, node_id):
    """The `member` request for a core change kind."""
    if kind in ("add_learner", "add_voter"):
        # Simulated nodes ignore addresses; the request needs a valid one.
        return member_request("add", node_id, "%s:1" % node_id, learner=kind == "add_learner")
    return member_request(kind, node_id)


class OperatorConfig:
    interval_min = 50
    interval_max = 400
    weights = {
        "add-learner": 3,
        "promote": 3,
        "add-voter": 1,
        "remove": 3,
        "rejoin": 1,
        "compact": 2,
    }
    retry_delay_max = 30  # a busy or not-leader refusal is retried this soon
    retries = 20
    answer_timeout = 400  # an attempt without an answer is retried
    min_voters = 3  # removals keep this many voters ...
    below_min_probability = 0.1  # ... except now and then (down to 2)
    keep_removed_running = 0.5  # when the Raft options make that harmless
    # A wiped node comes back under its old name only after every message
    # of its previous life is delivered or lost: Raft assumes a node never
    # forgets what it persisted, and a late acknowledgement from the old
    # machine must not speak for the new one.  (An operator takes minutes.)
    quarantine = 500
    burst = 0.2  # a second change sent at once, as a careless script would

    def __init__(self, **options):
        for name, value in options.items():
            if not hasattr(OperatorConfig, name):
                raise TypeError("unknown OperatorConfig option %r" % (name,))
            setattr(self, name, value)
        self.weights = dict(self.weights)


class Operator:
    def __init__(self, scheduler, cluster, config=None, trace=None):
        self.scheduler = scheduler
        self.rng = scheduler.rng
        self.cluster = cluster
        self.config = config or OperatorConfig()
        self._trace = trace
        self.counts = {}
        self.active = False
        self._next = None
        self._busy = None  # the membership command in flight: (kind, node, tries)
        self._generation = {}  # node -> times it was started to join (a stale
        # decommission of an earlier removal must not power off a rejoined node)
        self._handles = []
        self._last_sent = {}  # node -> the last command sent about it
        self._acked = {}  # node -> (kind, that command) when acknowledged
        kinds = [k for k in KINDS if self.config.weights.get(k, 0) > 0]
        self._kinds = kinds
        self._weights = [self.config.weights[k] for k in kinds]
        options = cluster.raft_options
        self._removed_may_run = options.get("pre_vote", True) or options.get("check_quorum", True)

    def trace(self, text):
        if self._trace is not None:
            self._trace("operator: " + text)

    def start(self):
        self.active = True
        if self._kinds:
            self._schedule()

    def stop(self):
        """No new commands; one in flight may still finish."""
        self.active = False
        self.scheduler.cancel(self._next)
        for handle in self._handles:
            self.scheduler.cancel(handle)
        self._handles = []
        self._busy = None

    @property
    def idle(self):
        return self._busy is None

    def acknowledged(self):
        """``{node: kind}`` for each node whose last membership command was
        acknowledged: the settled configuration must still show it (a
        removed node out, an added or promoted one in)."""
        return {node_id: kind for node_id, (kind, attempt) in self._acked.items()
                if self._last_sent.get(node_id) is attempt}

    def _schedule(self):
        cfg = self.config
        self._next = self.scheduler.after(self.rng.randint(cfg.interval_min, cfg.interval_max),
                                          self._act)

    def _later(self, delay, fn, *args):
        self._handles.append(self.scheduler.after(delay, fn, *args))

    def _act(self):
        if not self.active:
            return
        kind = self.rng.choices(self._kinds, self._weights)[0]
        if getattr(self, "_" + kind.replace("-", "_"))():
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if self._busy is not None and self.rng.random() < self.config.burst:
                self._burst()
        self._schedule()

    def _burst(self):
        """Another change right behind the first, not waiting for it: the
        leader must refuse it while the first is not committed (one change
        at a time).  Fire and forget."""
        leader = self.leader()
        members = self.members()
        if leader is None:
            return
        spares = [n for n in self._spares(members) if n.incarnation == 0]
        if spares:
            node = self.rng.choice(spares)
            self._start_joining(node, wipe=False)
            kind, node_id = self.rng.choice(["add_voter", "add_learner"]), node.node_id
        else:
            # The operator's floor holds for a burst too: when the first
            # change failed at once, nothing refuses the second, and a
            # removal could take the last voters (seen since the data
            # model moved the seeds).
            voters = sorted(i for i, role in members.items() if role == "voter")
            candidates = sorted(i for i, role in members.items() if role == "learner")
            if len(voters) > self.config.min_voters:
                candidates += voters
            if not candidates:
                return
            kind, node_id = "remove", self.rng.choice(candidates)
        via = self.via()
        self.trace("burst: %s %s via %s" % (kind, node_id, via.node_id))
        self.counts["burst"] = self.counts.get("burst", 0) + 1
        self._last_sent[node_id] = ("burst", kind)
        via.handle(_request(kind, node_id), lambda response: self.trace(
            "burst %s %s: %s" % (kind, node_id, request_error(response))))

    # -- what the cluster looks like

    def leader(self):
        leaders = self.cluster.leaders()
        if not leaders:
            return None
        return max(leaders, key=lambda n: n.replica.term)

    def via(self):
        """The node a command is sent to: any node that is up."""
        return self.rng.choice(self.cluster.up_nodes())

    def members(self):
        """The configuration the current leader uses, or None."""
        leader = self.leader()
        return None if leader is None else dict(leader.replica.members())

    def _spares(self, members):
        return [n for n in self.cluster.nodes.values()
                if n.node_id not in members and not n.in_service]

    # -- membership commands

    def _change(self, kind, node_id, tries=0):
        """Send a change to the leader; retry refusals that say "later"
        (and attempts that got no answer: the node crashed or paused)."""
        if self._busy is not None and tries == 0:
            return False
        self._busy = attempt = (kind, node_id, tries)
        leader = self.leader()
        if leader is None:
            self._retry(attempt, "no leader")
            return True

        def done(response):
            if self._busy is not attempt:
                return  # an attempt already given up on
            error = request_error(response)
            result = [m.id for m in response.member.members]
            if isinstance(error, (errors.NotLeader, errors.Unavailable)):
                self._retry(attempt, error)
            elif error is not None:
                self.trace("%s %s refused: %s" % (kind, node_id, error))
                self._busy = None
                if kind == "remove" and "not a member" in str(error):
                    # An earlier attempt went through (its answer was lost
                    # with a leader): the node is out all the same.
                    self._acked[node_id] = (kind, attempt)
                    self._removed(node_id)
            else:
                self.trace("%s %s done: %s" % (kind, node_id, result))
                self._busy = None
                self._acked[node_id] = (kind, attempt)
                if kind == "remove":
                    self._removed(node_id)

        via = self.via()
        self.trace("%s %s via %s" % (kind, node_id, via.node_id))
        self._last_sent[node_id] = attempt
        via.handle(_request(kind, node_id), done)
        self._later(self.config.answer_timeout, self._no_answer, attempt)
        return True

    def _no_answer(self, attempt):
        if self._busy is attempt:
            self._retry(attempt, "no answer")

    def _retry(self, attempt, why):
        kind, node_id, tries = attempt
        self.trace("%s %s: %s" % (kind, node_id, why))
        if tries >= self.config.retries:
            self.trace("gave up %s %s: %s" % (kind, node_id, why))
            self._busy = None
            return
        self._busy = retry = (kind, node_id, tries + 1)
        delay = self.rng.randint(1, self.config.retry_delay_max)
        self._later(delay, self._resend, retry)

    def _resend(self, retry):
        if self._busy is retry:
            self._busy = None
            self._change(retry[0], retry[1], retry[2])

    def _start_joining(self, node, wipe):
        self._generation[node.node_id] = self._generation.get(node.node_id, 0) + 1
        if wipe:
            node.wipe()
        node.in_service = True
        node.boot_voters = []  # --join: the configuration comes from the leader
        if not node.up:
            node.start()

    def _add_learner(self):
        return self._add("add_learner")

    def _add_voter(self):
        return self._add("add_voter")

    def _add(self, kind):
        members = self.members()
        if members is None or self._busy is not None or len(members) >= len(self.cluster.node_ids):
            return False
        spares = [n for n in self._spares(members) if n.incarnation == 0]
        if not spares:
            return False
        node = self.rng.choice(spares)
        self._start_joining(node, wipe=False)
        return self._change(kind, node.node_id)

    def _rejoin(self):
        members = self.members()
        if members is None or self._busy is not None:
            return False
        now = self.scheduler.now
        gone = [n for n in self.cluster.nodes.values()
                if n.node_id not in members and n.incarnation > 0]
        if not gone:
            return False
        node = self.rng.choice(gone)
        # An idle machine comes back with its data, or wiped (a new machine
        # under the old name, after the quarantine); a running one with its data.
        wipe = (not node.in_service and self.rng.random() < 0.7
                and now - node.decommissioned_at >= self.config.quarantine)
        self._start_joining(node, wipe=wipe)
        return self._change(self.rng.choice(["add_learner", "add_learner", "add_voter"]),
                            node.node_id)

    def _promote(self):
        members = self.members()
        if members is None:
            return False
        learners = sorted(i for i, role in members.items() if role == "learner")
        if not learners:
            return False
        return self._change("promote", self.rng.choice(learners))

    def _remove(self):
        members = self.members()
        if members is None:
            return False
        voters = sorted(i for i, role in members.items() if role == "voter")
        learners = sorted(i for i, role in members.items() if role == "learner")
        cfg = self.config
        candidates = list(learners)
        if len(voters) > cfg.min_voters or (
                len(voters) > 2 and self.rng.random() < cfg.below_min_probability):
            candidates += voters
        if not candidates:
            return False
        leader = self.leader()
        if leader.node_id in candidates and self.rng.random() < 0.4:
            victim = leader.node_id
        else:
            victim = self.rng.choice(candidates)
        return self._change("remove", victim)

    def _removed(self, node_id):
        """After a removal: power the node off for good now or a little
        later, or leave it running (it must not disrupt anything)."""
        if self._removed_may_run and self.rng.random() < self.config.keep_removed_running:
            self.trace("%s stays up after its removal" % node_id)
            return
        # Not cancelled by `stop`: the node is powered off all the same.
        self.scheduler.after(self.rng.randint(0, 200), self._decommission, node_id,
                             self._generation.get(node_id, 0))

    def _decommission(self, node_id, generation):
        members = self.members()
        if (members is not None and node_id in members) or self._generation.get(node_id, 0) != generation:
            return  # being added back meanwhile
        node = self.cluster.node(node_id)
        if not node.in_service:
            return
        self.trace("decommission %s" % node_id)
        node.in_service = False
        node.decommissioned_at = self.scheduler.now
        node.crash()

    # -- compaction

    def _compact(self):
        up = self.cluster.up_nodes()
        if not up:
            return False
        node = self.rng.choice(up)
        keep = self.rng.choice([0, 1, 5])
        self.trace("compact %s keeping %d" % (node.node_id, keep))
        return node.call("compact", keep)

    @property
    def total(self):
        return sum(self.counts.values())
