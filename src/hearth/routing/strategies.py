"""Routing strategies: the order in which a route's deployments are tried.

The first deployment in the order gets the request; the rest are the fallback chain. Every
strategy puts deployments that are at their concurrency limit after those that are not (a busy
local model falls back to the next deployment instead of queueing), and the router skips those
whose circuit breaker is open.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from hearth.deployments.deployment import Deployment, Target


def _priority(targets: list[Target], rng: random.Random) -> list[Target]:
    return list(targets)


def _weighted(targets: list[Target], rng: random.Random) -> list[Target]:
    """A weighted draw picks the first; the rest follow by weight (heaviest first), so an A/B
    or canary split still falls back when the drawn deployment fails."""
    weighted = [t for t in targets if t.weight > 0]
    if not weighted:
        return list(targets)
    first = rng.choices(weighted, weights=[t.weight for t in weighted])[0]
    rest = sorted((t for t in targets if t is not first), key=lambda t: -t.weight)
    return [first, *rest]


def _least_busy(targets: list[Target], rng: random.Random) -> list[Target]:
    """Fewest requests in flight relative to capacity; ties broken at random so idle deployments
    share the load."""
    shuffled = rng.sample(targets, len(targets))
    return sorted(shuffled, key=lambda t: _load(t.deployment))


def _lowest_latency(targets: list[Target], rng: random.Random) -> list[Target]:
    """Lowest moving-average time to first token. A deployment not measured yet goes first, so
    every deployment gets measured."""
    shuffled = rng.sample(targets, len(targets))
    return sorted(
        shuffled, key=lambda t: -1.0 if t.deployment.stats.ttft is None else t.deployment.stats.ttft
    )


def _lowest_cost(targets: list[Target], rng: random.Random) -> list[Target]:
    """Cheapest per token first (input and output prices summed), in listed order on ties."""
    return sorted(targets, key=lambda t: t.deployment.price.input + t.deployment.price.output)


STRATEGIES: dict[str, Callable[[list[Target], random.Random], list[Target]]] = {
    "priority": _priority,
    # Listed order, cheapest first: each answer is checked before the next is asked
    # (routing/cascade.py).
    "cascade": _priority,
    "weighted": _weighted,
    "least-busy": _least_busy,
    "lowest-latency": _lowest_latency,
    "lowest-cost": _lowest_cost,
}


def _load(deployment: Deployment) -> float:
    capacity = deployment.capacity
    in_flight = deployment.stats.in_flight
    return in_flight / capacity if capacity else float(in_flight)


def saturated(deployment: Deployment) -> bool:
    capacity = deployment.capacity
    return capacity is not None and deployment.stats.in_flight >= capacity


def order(strategy: str, targets: list[Target], rng: random.Random) -> list[Deployment]:
    """The deployments to try, in order."""
    ranked = [t.deployment for t in STRATEGIES[strategy](targets, rng)]
    if len(ranked) == 1 or strategy == "cascade":  # a busy cheap one is skipped, not moved last
        return ranked
    free = [d for d in ranked if not saturated(d)]
    return free + [d for d in ranked if saturated(d)]
