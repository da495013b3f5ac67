"""The nemesis: injects faults into a simulated cluster at random times.

Every fault kind is drawn from the scheduler's RNG, and each one that has a
duration schedules its own undo, so faults overlap freely:

``partition``     split the nodes into two sides, cut both ways
``one-way``       cut a few directed links (a hears b, b does not hear a)
``isolate``       cut one node (often the leader) off from everyone
``crash``         power a node off now; it restarts after a random downtime
``crash-mid-io``  arm a crash at the k-th next sync or send of a node, so it
                  dies in the middle of a batch
``full-restart``  crash every node at once, then restart them all
``crash-loop``    a node dies again soon after each restart, a few times
``pause``         freeze a node (often the leader) like a long GC pause: it
                  neither ticks nor handles input, then wakes up and works
                  through what queued up, still believing what it believed
``loss``          a period in which a share of all messages is dropped
``duplication``   a period in which messages are delivered twice
``delay``         a period of long, irregular delays (heavy reordering)
``clock``         a node's ticks run faster or slower for a while
``transfer``      the leader is asked to hand leadership to another node
                  (an operator's action, not a fault, but it races with them)

`stop` cancels what is still to come and heals everything: links, weather,
clocks, and restarts crashed nodes — so that the run can check that the
cluster recovers and that no acknowledged write was lost.
"""

from geocachedb.testing.cluster import member_request
from geocachedb.testing.network import LinkWeather

KINDS = (
    "partition",
    "one-way",
    "isolate",
    "crash",
    "crash-mid-io",
    "full-restart",
    "crash-loop",
    "pause",
    "loss",
    "duplication",
    "delay",
    "clock",
    "transfer",
)


class NemesisConfig:
    interval_min = 30  # virtual time between two faults (a tick is ~10)
    interval_max = 300
    duration_min = 50  # how long a partition, pause, weather or clock fault lasts
    duration_max = 600
    downtime_min = 1  # how long a crashed node stays down
    downtime_max = 300
    quick_restart = 0.5  # share of restarts within quick_downtime (a supervisor)
    quick_downtime = 30
    base_loss = 0.0  # always-on network imperfection
    base_duplicate = 0.0
    base_spike = 0.02
    base_spike_delay = 100
    min_delay = 1
    max_delay = 10
    weights = {
        "partition": 3,
        "one-way": 2,
        "isolate": 3,
        "crash": 2,
        "crash-mid-io": 2,
        "full-restart": 0.3,
        "crash-loop": 1,
        "pause": 2,
        "loss": 1,
        "duplication": 1,
        "delay": 1,
        "clock": 2,
        "transfer": 1,
    }

    def __init__(self, **options):
        for name, value in options.items():
            if not hasattr(NemesisConfig, name):
                raise TypeError("unknown NemesisConfig option %r" % (name,))
            setattr(self, name, value)
        self.weights = dict(self.weights)

    def base_weather(self):
        return LinkWeather(
            loss=self.base_loss,
            duplicate=self.base_duplicate,
            min_delay=self.min_delay,
            max_delay=self.max_delay,
            spike=self.base_spike,
            spike_delay=self.base_spike_delay,
        )


class Nemesis:
    def __init__(self, scheduler, cluster, config=None, trace=None):
        self.scheduler = scheduler
        self.rng = scheduler.rng
        self.cluster = cluster
        self.network = cluster.network
        self.config = config or NemesisConfig()
        self.counts = {}
        self.active = False
        self._trace = trace
        self._next = None
        self._undo = []  # handles of scheduled undos
        self._cut_counts = {}  # (frm, to) -> number of faults cutting it
        self._weather = {}  # kind -> number of active episodes
        self._clock_factor = {}  # node -> list of active factors
        self._base_tick = {n.node_id: n.tick_interval for n in cluster.nodes.values()}
        self._restart = {}  # node -> handle of its scheduled restart
        self._looping = {}  # node -> crashes still to come in its crash loop
        self.network.weather = self.config.base_weather()
        cluster.crash_listeners.append(self._node_crashed)
        kinds = [k for k in KINDS if self.config.weights.get(k, 0) > 0]
        self._kinds = kinds
        self._weights = [self.config.weights[k] for k in kinds]

    def trace(self, text):
        if self._trace is not None:
            self._trace("nemesis: " + text)

    def start(self):
        self.active = True
        if self._kinds:
            self._schedule()

    def _schedule(self):
        cfg = self.config
        self._next = self.scheduler.after(
            self.rng.randint(cfg.interval_min, cfg.interval_max), self._inject
        )

    def _inject(self):
        if not self.active:
            return
        kind = self.rng.choices(self._kinds, self._weights)[0]
        if getattr(self, "_" + kind.replace("-", "_"))():
            self.counts[kind] = self.counts.get(kind, 0) + 1
        self._schedule()

    def _duration(self):
        return self.rng.randint(self.config.duration_min, self.config.duration_max)

    def _later(self, delay, fn, *args):
        self._undo.append(self.scheduler.after(delay, fn, *args))

    # -- partitions

    def _cut_links(self, links):
        for link in links:
            self._cut_counts[link] = self._cut_counts.get(link, 0) + 1
            self.network.cut(*link)
        self._later(self._duration(), self._uncut_links, links)

    def _uncut_links(self, links):
        for link in links:
            n = self._cut_counts.get(link, 0) - 1
            if n <= 0:
                self._cut_counts.pop(link, None)
                self.network._cut.discard(link)
            else:
                self._cut_counts[link] = n
        self.trace("healed %s" % (links,))

    def _partition(self):
        ids = list(self.cluster.node_ids)
        self.rng.shuffle(ids)
        k = self.rng.randint(1, len(ids) // 2)
        side, other = ids[:k], ids[k:]
        links = [(a, b) for a in side for b in other] + [(b, a) for a in side for b in other]
        self.trace("partition %s | %s" % (sorted(side), sorted(other)))
        self._cut_links(links)
        return True

    def _one_way(self):
        ids = self.cluster.node_ids
        links = []
        for _ in range(self.rng.randint(1, len(ids))):
            a, b = self.rng.sample(ids, 2)
            links.append((a, b))
        self.trace("one-way cuts %s" % (links,))
        self._cut_links(links)
        return True

    def _isolate(self):
        leaders = self.cluster.leaders()
        if leaders and self.rng.random() < 0.7:
            victim = self.rng.choice(leaders).node_id
        else:
            victim = self.rng.choice(self.cluster.node_ids)
        links = [(victim, o) for o in self.cluster.node_ids if o != victim]
        links += [(o, victim) for o in self.cluster.node_ids if o != victim]
        self.trace("isolate %s" % victim)
        self._cut_links(links)
        return True

    # -- crashes

    def _may_crash(self):
        serving = self.cluster.in_service()
        down = sum(1 for n in serving if not n.up)
        # At most a majority down at once (then the cluster is unavailable,
        # which is allowed; safety must hold regardless).
        return down < (len(serving) + 1) // 2

    def _pick_up_node(self):
        up = self.cluster.up_nodes()
        leaders = self.cluster.leaders()
        if leaders and self.rng.random() < 0.4:
            return self.rng.choice(leaders)
        return self.rng.choice(up) if up else None

    def _crash(self):
        if not self._may_crash():
            return False
        node = self._pick_up_node()
        if node is None:
            return False
        self.trace("crash %s" % node.node_id)
        node.crash()
        return True

    def _crash_mid_io(self):
        if not self._may_crash():
            return False
        node = self._pick_up_node()
        if node is None:
            return False
        after = self.rng.randint(1, 8)
        self.trace("arm crash of %s at its I/O #%d" % (node.node_id, after))
        node.arm_crash(after)
        return True

    def _full_restart(self):
        self.trace("full restart")
        for node in self.cluster.up_nodes():
            node.crash()
        return True

    def _crash_loop(self):
        # A process that keeps dying soon after each start (a supervisor
        # restarting it): many short incarnations, so that messages meant
        # for one of them reach a later one.
        if not self._may_crash():
            return False
        node = self._pick_up_node()
        if node is None:
            return False
        times = self.rng.randint(2, 5)
        self.trace("crash loop of %s x%d" % (node.node_id, times))
        self._looping[node.node_id] = times
        node.crash()
        return True

    def _node_crashed(self, node_id):
        if not self.active or node_id in self._restart or not self.cluster.node(node_id).in_service:
            return
        loops = self._looping.get(node_id)
        if loops:
            self._looping[node_id] = loops - 1
            delay = self.rng.randint(1, 20)
            self._restart[node_id] = self.scheduler.after(delay, self._restart_node, node_id)
            self._later(delay + self.rng.randint(5, 80), self._crash_again, node_id)
            return
        cfg = self.config
        high = cfg.downtime_max
        if self.rng.random() < cfg.quick_restart:
            high = min(high, cfg.quick_downtime)
        delay = self.rng.randint(cfg.downtime_min, max(cfg.downtime_min, high))
        self._restart[node_id] = self.scheduler.after(delay, self._restart_node, node_id)

    def _crash_again(self, node_id):
        node = self.cluster.node(node_id)
        if self.active and node.up and self._looping.get(node_id):
            node.crash()
        elif not self._looping.get(node_id):
            self._looping.pop(node_id, None)

    def _restart_node(self, node_id):
        self._restart.pop(node_id, None)
        node = self.cluster.node(node_id)
        if not node.up and node.in_service:
            self.trace("restart %s" % node_id)
            node.start()

    def _pause(self):
        leaders = self.cluster.leaders()
        if leaders and self.rng.random() < 0.6:
            node = self.rng.choice(leaders)
        else:
            node = self._pick_up_node()
        if node is None or node.paused:
            return False
        self.trace("pause %s" % node.node_id)
        node.pause()
        self._later(self._duration(), self._resume, node.node_id)
        return True

    def _resume(self, node_id):
        node = self.cluster.node(node_id)
        if node.paused:
            self.trace("resume %s" % node_id)
            node.resume()

    # -- weather

    def _episode(self, kind, **values):
        self._weather[kind] = self._weather.get(kind, 0) + 1
        for attr, value in values.items():
            setattr(self.network.weather, attr, value)
        self.trace("%s episode: %r" % (kind, values))
        self._later(self._duration(), self._end_episode, kind, sorted(values))

    def _end_episode(self, kind, attrs):
        self._weather[kind] -= 1
        if self._weather[kind] == 0:
            base = self.config.base_weather()
            for attr in attrs:
                setattr(self.network.weather, attr, getattr(base, attr))

    def _loss(self):
        self._episode("loss", loss=self.rng.choice([0.05, 0.1, 0.2, 0.4]))
        return True

    def _duplication(self):
        self._episode("duplication", duplicate=self.rng.choice([0.05, 0.1, 0.3]))
        return True

    def _delay(self):
        # Some messages arrive long after they were sent: after elections,
        # restarts and retries have moved everything on.
        self._episode(
            "delay",
            spike=self.rng.choice([0.05, 0.2, 0.5, 1.0]),
            spike_delay=self.rng.choice([100, 300, 600]),
        )
        return True

    def _clock(self):
        # Often the leader: a leader whose clock runs slow keeps believing
        # in its leadership longest (what lease-based shortcuts get wrong).
        leaders = self.cluster.leaders()
        if leaders and self.rng.random() < 0.5:
            node_id = self.rng.choice(leaders).node_id
        else:
            node_id = self.rng.choice(self.cluster.node_ids)
        factor = self.rng.choice([0.5, 0.7, 1.5, 2.0, 3.0, 5.0])
        self._clock_factor.setdefault(node_id, []).append(factor)
        self._apply_clock(node_id)
        self.trace("clock of %s x%.1f" % (node_id, factor))
        self._later(self._duration(), self._end_clock, node_id, factor)
        return True

    def _end_clock(self, node_id, factor):
        self._clock_factor[node_id].remove(factor)
        self._apply_clock(node_id)

    def _apply_clock(self, node_id):
        factor = 1.0
        for f in self._clock_factor.get(node_id, ()):
            factor *= f
        node = self.cluster.node(node_id)
        node.tick_interval = max(1, int(round(self._base_tick[node_id] * factor)))

    # -- operations

    def _transfer(self):
        leaders = self.cluster.leaders()
        if not leaders:
            return False
        leader = self.rng.choice(leaders)
        target = self.rng.choice([n for n in self.cluster.node_ids if n != leader.node_id])
        # Sent to any node, as an operator's shell would be: a follower
        # forwards it to the leader.
        via = self.rng.choice(self.cluster.up_nodes())
        self.trace("transfer leadership %s -> %s via %s" % (leader.node_id, target, via.node_id))
        via.handle(member_request("transfer", target), lambda response: None)
        return True

    # -- the end

    def stop(self):
        """No more faults; heal everything and restart crashed nodes."""
        self.active = False
        self.scheduler.cancel(self._next)
        for handle in self._undo:
            self.scheduler.cancel(handle)
        self._undo = []
        for handle in self._restart.values():
            self.scheduler.cancel(handle)
        self._restart = {}
        self._looping = {}
        self._cut_counts = {}
        self.network.heal()
        weather = self.config.base_weather()
        weather.loss = 0.0
        weather.duplicate = 0.0
        self.network.weather = weather
        self._clock_factor = {}
        for node_id, tick in self._base_tick.items():
            self.cluster.node(node_id).tick_interval = tick
        for node in self.cluster.nodes.values():
            node._crash_countdown = None
            node.resume()
            if not node.up and node.in_service:
                node.start()
        self.trace("healed everything")

    @property
    def total(self):
        return sum(self.counts.values())
