"""Recent latency percentiles: the difference between the histograms now and a reading from a
few minutes ago, left out where "since start" says the same."""

from __future__ import annotations

import math

from hearth.api.admin.latency_window import LatencyWindow
from hearth.api.admin.stats import read_stats
from hearth.observability.metrics import HearthMetrics

CHAT = "/v1/chat/completions"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def buckets(count: float) -> dict[str, dict[float, float]]:
    return {"request_duration": {0.1: count, math.inf: count}}


def test_a_young_server_has_no_separate_window() -> None:
    clock = Clock()
    window = LatencyWindow(window=300, gap=5, shortest=60, clock=clock)
    clock.now += 200  # up for less than the window: "since start" is the window
    assert window.since(buckets(10), {"request_duration": 1.0}) is None


def test_the_window_counts_only_what_happened_within_it() -> None:
    clock = Clock()
    window = LatencyWindow(window=300, gap=5, shortest=60, clock=clock)
    clock.now += 1000  # a long uptime: the start reading has left the window
    assert window.since(buckets(100), {"request_duration": 5.0}) is None  # nothing to compare
    clock.now += 120  # a dashboard reading two minutes later
    difference = window.since(buckets(130), {"request_duration": 8.0})
    assert difference is not None
    assert difference.seconds == 120
    assert difference.buckets["request_duration"] == {0.1: 30, math.inf: 30}
    assert difference.sums["request_duration"] == 3.0


def test_readings_older_than_the_window_are_dropped_and_a_short_window_is_left_out() -> None:
    clock = Clock()
    window = LatencyWindow(window=300, gap=5, shortest=60, clock=clock)
    clock.now += 1000
    window.since(buckets(100), {})
    clock.now += 400  # the only reading is now too old to compare with
    assert window.since(buckets(150), {}) is None
    clock.now += 30  # a window of 30 s: too short to say anything
    assert window.since(buckets(160), {}) is None
    clock.now += 40
    difference = window.since(buckets(170), {})
    assert difference is not None and difference.seconds == 70
    assert difference.buckets["request_duration"][math.inf] == 20


def test_frequent_polls_keep_one_reading_per_gap() -> None:
    clock = Clock()
    window = LatencyWindow(window=300, gap=5, shortest=60, clock=clock)
    clock.now += 1000
    for count in range(100):  # a dashboard polling every second, for 100 s
        window.since(buckets(count), {})
        clock.now += 1
    assert len(window._readings) <= 100 / 5 + 1


def test_stats_show_recent_percentiles_once_the_server_is_older_than_the_window() -> None:
    clock = Clock()
    metrics = HearthMetrics()
    window = LatencyWindow(window=300, gap=5, shortest=60, clock=clock)
    for _ in range(10):
        metrics.request_duration.labels(CHAT).observe(2.0)  # slow, long ago
    metrics.requests.labels(CHAT, "m", "m", "200").inc(20)
    assert read_stats(metrics.registry, window)["recent"] is None  # young: same as since start
    clock.now += 1000
    read_stats(metrics.registry, window)
    clock.now += 120
    for _ in range(10):
        metrics.request_duration.labels(CHAT).observe(0.02)  # fast, just now
    stats = read_stats(metrics.registry, window)
    assert stats["latency"]["request_duration"]["count"] == 20
    assert stats["latency"]["request_duration"]["p99"] > 1  # since start: the slow ones show
    recent = stats["recent"]
    assert recent["seconds"] == 120
    assert recent["latency"]["request_duration"]["count"] == 10
    assert recent["latency"]["request_duration"]["p99"] <= 0.025
