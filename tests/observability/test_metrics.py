"""HearthMetrics: one registry per app, and usage counting that tolerates missing fields."""

from __future__ import annotations

from hearth.observability.metrics import HearthMetrics


def test_each_app_has_its_own_registry() -> None:
    first, second = HearthMetrics(), HearthMetrics()
    first.requests.labels("/v1/chat/completions", "m", "m", "200").inc()
    assert (
        first.registry.get_sample_value(
            "hearth_requests_total",
            {"endpoint": "/v1/chat/completions", "model": "m", "deployment": "m", "status": "200"},
        )
        == 1
    )
    assert (
        second.registry.get_sample_value(
            "hearth_requests_total",
            {"endpoint": "/v1/chat/completions", "model": "m", "deployment": "m", "status": "200"},
        )
        is None
    )


def test_usage_counting_skips_what_is_missing_or_not_a_number() -> None:
    metrics = HearthMetrics()
    metrics.count_usage("m", {"prompt_tokens": 7, "completion_tokens": 3})
    metrics.count_usage("m", {"prompt_tokens": "7"})
    metrics.count_usage("m", None)
    sample = metrics.registry.get_sample_value
    assert sample("hearth_tokens_total", {"model": "m", "direction": "in"}) == 7
    assert sample("hearth_tokens_total", {"model": "m", "direction": "out"}) == 3
