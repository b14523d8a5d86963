"""The JSON reading of the metrics that the dashboard polls: counters summed, the dashboard's own
requests left out, and percentiles estimated from histogram buckets as Prometheus does."""

from __future__ import annotations

import math

import pytest

from hearth.api.admin.stats import quantile, read_stats
from hearth.observability.metrics import HearthMetrics


def test_quantiles_interpolate_inside_the_bucket_as_prometheus_does() -> None:
    buckets = {0.1: 10.0, 0.5: 30.0, 1.0: 40.0, math.inf: 40.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (20 - 10) / 20)
    assert quantile(0.25, buckets) == pytest.approx(0.1 * 10 / 10)
    assert quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * (39.6 - 30) / 10)
    # A rank in the +Inf bucket reads as the highest finite bound.
    assert quantile(0.99, {0.1: 1.0, math.inf: 10.0}) == 0.1
    assert quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert quantile(0.5, {}) is None


def test_requests_tokens_and_latency_of_model_requests_only() -> None:
    metrics = HearthMetrics()
    chat = "/v1/chat/completions"
    metrics.requests.labels(chat, "m1", "m1", "200").inc(3)
    metrics.requests.labels(chat, "m2", "d2", "503").inc()
    metrics.requests.labels("/admin/stats", "", "", "200").inc(50)  # the dashboard polling
    metrics.requests.labels("/ui", "", "", "200").inc()
    for seconds in (0.2, 0.3, 0.4, 3.0):
        metrics.request_duration.labels(chat).observe(seconds)
    for _ in range(50):
        metrics.request_duration.labels("/admin/stats").observe(0.001)
    metrics.count_usage("m1", {"prompt_tokens": 7, "completion_tokens": 11})
    metrics.count_usage("m2", {"prompt_tokens": 1, "completion_tokens": 2})
    metrics.time_to_first_token.labels("m1").observe(0.05)

    stats = read_stats(metrics.registry)

    assert (stats["requests"], stats["errors"]) == (4, 1)
    assert (stats["tokens_in"], stats["tokens_out"]) == (8, 13)
    assert stats["models"]["m1"] == {"requests": 3, "tokens_in": 7, "tokens_out": 11}
    assert stats["models"]["m2"]["errors"] == 1
    duration = stats["latency"]["request_duration"]
    assert duration["count"] == 4
    assert duration["mean"] == pytest.approx(3.9 / 4)
    assert 0.25 < duration["p50"] <= 0.5 < duration["p95"] <= duration["p99"] <= 5
    assert stats["latency"]["time_to_first_token"]["count"] == 1
    assert stats["latency"]["gateway_overhead"] == {
        "count": 0,
        "mean": None,
        "p50": None,
        "p95": None,
        "p99": None,
    }
