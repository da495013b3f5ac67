"""Swarm testing: each seed draws its own fault mix and workload shape.

Running every fault kind at a fixed rate in every seed is a poor search:
the faults mask each other (a bug that needs a delayed message to reach a
node that restarted quickly rarely survives a partition, a pause and three
crashes arriving at the same time).  Swarm testing (Groce et al., ISSTA
2012) instead turns each feature on or off per run and varies its
intensity, so over many seeds every combination, including the quiet ones,
gets its turn.  The simulator applies `swarm` to a seed's configuration
before the run; everything is drawn from the seed's RNG, so a seed still
replays exactly.
"""

import copy

from geocachedb.testing.faults import KINDS


def swarm(config, rng):
    """Return a copy of ``config`` (a `sim.SimConfig`) with this seed's mix:
    a random subset of the fault kinds (sometimes all of them) at random
    weights, random network and restart characteristics, a random subset of
    the operator's commands (membership changes, compaction; none in a
    fifth of the seeds), and a random read/write balance."""
    config = copy.deepcopy(config)
    nemesis = config.nemesis
    base = dict(nemesis.weights)
    if rng.random() < 0.25:
        enabled = [k for k in KINDS if base.get(k, 0) > 0]
    else:
        enabled = [k for k in KINDS if base.get(k, 0) > 0 and rng.random() < 0.5]
        if not enabled:
            enabled = [rng.choice([k for k in KINDS if base.get(k, 0) > 0])]
    nemesis.weights = {
        k: (base[k] * rng.uniform(0.5, 2.0) if k in enabled else 0) for k in KINDS
    }
    scale = rng.choice([0.5, 1, 1, 2])
    nemesis.interval_min = max(1, int(nemesis.interval_min * scale))
    nemesis.interval_max = max(nemesis.interval_min, int(nemesis.interval_max * scale))
    nemesis.base_spike = rng.choice([0.0, 0.02, 0.02, 0.1])
    nemesis.base_spike_delay = rng.choice([100, 300])
    nemesis.base_duplicate = rng.choice([0.0, 0.0, 0.02])
    nemesis.quick_restart = rng.choice([0.2, 0.5, 1.0])
    operator = config.operator
    kinds = [k for k, w in operator.weights.items() if w > 0]
    roll = rng.random()
    if roll < 0.2:
        # A fixed membership: the plain paths stay covered on their own.
        operator.weights = {k: 0 for k in operator.weights}
    elif roll < 0.45:
        pass  # every operator command
    else:
        chosen = [k for k in kinds if rng.random() < 0.6] or [rng.choice(kinds)]
        operator.weights = {k: (w * rng.uniform(0.5, 2.0) if k in chosen else 0)
                            for k, w in operator.weights.items()}
    workload = config.workload
    workload.get_weight = rng.choice([20, 50, 70])
    workload.put_weight = rng.choice([30, 40])
    workload.delete_weight = rng.choice([0, 10, 20])
    workload.keys = rng.choice([1, 2, 3, 5])
    return config
