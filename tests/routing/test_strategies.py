"""Routing strategies order a route's deployments; saturated ones go last."""

from __future__ import annotations

import random
from collections import Counter

from hearth.config import Price
from hearth.deployments.deployment import RemoteDeployment, Target
from hearth.engines.base import Capabilities
from hearth.routing.strategies import order


def remote(name: str, **kwargs: object) -> RemoteDeployment:
    return RemoteDeployment(name, f"http://{name}/v1", name, Capabilities(chat=True), **kwargs)  # type: ignore[arg-type]


def names(deployments: list[object]) -> list[str]:
    return [d.name for d in deployments]  # type: ignore[attr-defined]


def test_priority_keeps_the_listed_order() -> None:
    targets = [Target(remote("a")), Target(remote("b")), Target(remote("c"))]
    assert names(order("priority", targets, random.Random(1))) == ["a", "b", "c"]


def test_weighted_draws_the_first_by_weight_and_keeps_the_rest_as_fallbacks() -> None:
    a, b = remote("a"), remote("b")
    targets = [Target(a, 90), Target(b, 10)]
    rng = random.Random(7)
    firsts = Counter(order("weighted", targets, rng)[0].name for _ in range(10_000))
    assert 0.88 < firsts["a"] / 10_000 < 0.92
    assert sorted(names(order("weighted", targets, rng))) == ["a", "b"]


def test_a_zero_weight_deployment_is_only_a_fallback() -> None:
    targets = [Target(remote("a"), 0), Target(remote("b"), 1)]
    rng = random.Random(3)
    assert all(names(order("weighted", targets, rng)) == ["b", "a"] for _ in range(100))


def test_least_busy_prefers_the_fewest_in_flight_relative_to_capacity() -> None:
    a, b = remote("a", max_concurrency=10), remote("b", max_concurrency=2)
    a.stats.in_flight, b.stats.in_flight = 3, 1  # 30% vs 50% busy
    assert names(order("least-busy", [Target(b), Target(a)], random.Random(1))) == ["a", "b"]


def test_lowest_latency_tries_unmeasured_first_then_the_fastest() -> None:
    a, b, c = remote("a"), remote("b"), remote("c")
    a.stats.observe_ttft(0.5)
    b.stats.observe_ttft(0.1)
    assert names(order("lowest-latency", [Target(a), Target(b), Target(c)], random.Random(1))) == [
        "c",
        "b",
        "a",
    ]


def test_lowest_cost_orders_by_price() -> None:
    pricey = remote("pricey", price=Price(input=5, output=15))
    cheap = remote("cheap", price=Price(input=0.1, output=0.2))
    assert names(order("lowest-cost", [Target(pricey), Target(cheap)], random.Random(1))) == [
        "cheap",
        "pricey",
    ]


def test_a_saturated_deployment_goes_after_the_free_ones() -> None:
    local_like = remote("first", max_concurrency=1)
    local_like.stats.in_flight = 1
    targets = [Target(local_like), Target(remote("second"))]
    assert names(order("priority", targets, random.Random(1))) == ["second", "first"]


def test_the_moving_average_follows_recent_latency() -> None:
    d = remote("d")
    d.stats.observe_ttft(1.0)
    for _ in range(20):
        d.stats.observe_ttft(0.1)
    assert d.stats.ttft is not None and abs(d.stats.ttft - 0.1) < 0.01
