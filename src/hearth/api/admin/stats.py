"""GET /admin/stats: a compact JSON reading of Hearth's own metrics for the dashboard — request
and token counters (the page turns their deltas into rates), requests in flight, and latency
percentiles estimated from the histograms: since the server started, and over the last few
minutes when that says something else (see latency_window)."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CollectorRegistry

from hearth.api.admin.latency_window import LatencyWindow

router = APIRouter(prefix="/admin", tags=["admin"])

QUANTILES = (0.5, 0.95, 0.99)
# Histogram family name → the key the dashboard shows it under.
LATENCY_HISTOGRAMS = {
    "hearth_request_duration_seconds": "request_duration",
    "hearth_time_to_first_token_seconds": "time_to_first_token",
    "hearth_time_per_output_token_seconds": "time_per_output_token",
    "hearth_gateway_overhead_seconds": "gateway_overhead",
}


@router.get("/stats", summary="Counters, requests in flight and latency percentiles, as JSON")
async def stats(request: Request) -> dict[str, Any]:
    registry: CollectorRegistry = request.app.state.metrics.registry
    return read_stats(registry, request.app.state.latency_window)


def read_stats(registry: CollectorRegistry, window: LatencyWindow | None = None) -> dict[str, Any]:
    """Requests count only those that named a model, and the request duration only of the
    endpoints those came to, so the dashboard's own polling does not show; an error is an answer
    with a 4xx or 5xx status."""
    families = list(registry.collect())
    model_endpoints = {
        sample.labels.get("endpoint")
        for family in families
        for sample in family.samples
        if sample.name == "hearth_requests_total" and sample.labels.get("model")
    }
    requests = errors = 0.0
    tokens: dict[str, float] = {"in": 0.0, "out": 0.0}
    by_model: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    in_flight = 0.0
    buckets: dict[str, dict[float, float]] = {key: {} for key in LATENCY_HISTOGRAMS.values()}
    sums: dict[str, float] = defaultdict(float)
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if "endpoint" in labels and labels["endpoint"] not in model_endpoints:
                continue
            if sample.name == "hearth_requests_total" and labels.get("model"):
                requests += sample.value
                by_model[labels["model"]]["requests"] += sample.value
                if labels.get("status", "").startswith(("4", "5")):
                    errors += sample.value
                    by_model[labels["model"]]["errors"] += sample.value
            elif sample.name == "hearth_tokens_total":
                direction = labels.get("direction", "")
                if direction in tokens:
                    tokens[direction] += sample.value
                    by_model[labels.get("model", "")][f"tokens_{direction}"] += sample.value
            elif sample.name == "hearth_requests_in_flight":
                in_flight = sample.value
            elif family.name in LATENCY_HISTOGRAMS:
                key = LATENCY_HISTOGRAMS[family.name]
                if sample.name.endswith("_bucket"):
                    bound = float(labels["le"])
                    buckets[key][bound] = buckets[key].get(bound, 0.0) + sample.value
                elif sample.name.endswith("_sum"):
                    sums[key] += sample.value
    return {
        "time": time.time(),
        "requests": requests,
        "errors": errors,
        "tokens_in": tokens["in"],
        "tokens_out": tokens["out"],
        # This request is in flight too.
        "in_flight": max(0.0, in_flight - 1),
        "models": {name: dict(figures) for name, figures in sorted(by_model.items())},
        "latency": {key: _summary(buckets[key], sums[key]) for key in LATENCY_HISTOGRAMS.values()},
        "recent": None if window is None else _recent(window, buckets, sums),
    }


def _recent(
    window: LatencyWindow, buckets: dict[str, dict[float, float]], sums: dict[str, float]
) -> dict[str, Any] | None:
    """The percentiles over the last few minutes, or None where "since start" says the same."""
    difference = window.since(buckets, sums)
    if difference is None:
        return None
    return {
        "seconds": difference.seconds,
        "latency": {
            key: _summary(difference.buckets.get(key, {}), difference.sums.get(key, 0.0))
            for key in LATENCY_HISTOGRAMS.values()
        },
    }


def _summary(cumulative: dict[float, float], total: float) -> dict[str, float | None]:
    count = cumulative.get(math.inf, 0.0)
    summary: dict[str, float | None] = {
        "count": count,
        "mean": total / count if count else None,
    }
    for q in QUANTILES:
        summary[f"p{round(q * 100)}"] = quantile(q, cumulative)
    return summary


def quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile: linear interpolation inside the bucket where the rank
    falls; the highest finite bound when it falls in the +Inf bucket. None with no observations."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] == 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower
