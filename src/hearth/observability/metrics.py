"""Prometheus metrics: one registry per application (no process-wide globals), so several apps
in one process, as in tests, never share counters. Labels stay bounded: model and endpoint names
from the catalogue and the route table, never request ids or keys."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

# Tokens are generated in tens of milliseconds; loads and whole answers take seconds.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LOAD_BUCKETS = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300)
TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1)
OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1)


class HearthMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "hearth_requests",
            "Requests answered.",
            ["endpoint", "model", "deployment", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "hearth_request_duration_seconds",
            "Time from request to the end of the answer.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("hearth_requests_in_flight", "Requests being answered.", registry=r)
        self.time_to_first_token = Histogram(
            "hearth_time_to_first_token_seconds",
            "Time from request to the first streamed chunk.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "hearth_tokens", "Tokens processed.", ["model", "direction"], registry=r
        )
        self.model_load_duration = Histogram(
            "hearth_model_load_duration_seconds",
            "Time from starting an engine to its model being ready.",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )

        self.time_per_output_token = Histogram(
            "hearth_time_per_output_token_seconds",
            "Streamed answers: time from the first chunk to the end, per further output token.",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.upstream_attempts = Counter(
            "hearth_upstream_attempts",
            "Requests sent to deployments, by result: ok, failed (retried or fallen back), "
            "rejected (a client error the deployment gave back).",
            ["deployment", "result"],
            registry=r,
        )
        self.cascade_escalations = Counter(
            "hearth_cascade_escalations",
            "Answers a cascade route rejected, sending the request to its next deployment, by "
            "the check that failed (routing/cascade.py REJECTIONS).",
            ["model", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "hearth_fallbacks",
            "Requests that moved on to a route's next deployment.",
            ["model"],
            registry=r,
        )
        self.rejections = Counter(
            "hearth_rejections",
            "Requests refused by access control, by reason: key (missing, unknown, expired or "
            "revoked), scope, rate_limit, budget.",
            ["reason"],
            registry=r,
        )
        self.budget_events = Counter(
            "hearth_budget_events",
            "Budget thresholds reached (emitted by this replica), by key or team and percent.",
            ["kind", "threshold"],
            registry=r,
        )
        self.budget_webhook_deliveries = Counter(
            "hearth_budget_webhook_deliveries",
            "Tries to deliver budget events to the webhook: delivered, failed (retried), gave_up.",
            ["outcome"],
            registry=r,
        )
        for outcome in ("delivered", "failed", "gave_up"):  # at 0 from the start, for rate()
            self.budget_webhook_deliveries.labels(outcome)
        self.cache = Counter(
            "hearth_cache_lookups", "Response cache lookups, by result.", ["result"], registry=r
        )
        self.replica_choices = Counter(
            "hearth_replica_choices",
            "Requests to a model with replicas, by why their replica was chosen: prefix (it "
            "held the longest prefix of the prompt), busy (another held more but was too busy), "
            "least_busy (none held any), round_robin.",
            ["model", "reason"],
            registry=r,
        )
        self.gateway_overhead = Histogram(
            "hearth_gateway_overhead_seconds",
            "Time Hearth itself spent on a request before its answer started, upstream time "
            "excluded.",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )

        self.route_decisions = Counter(
            "hearth_route_decisions",
            "Requests to a route with rules, by what chose their deployment: the rule (its "
            "number and conditions, e.g. 'rule:2 tools' or 'rule:1 class:code') or the route's "
            "strategy ('strategy:priority'). Labels come from the settings, never the request.",
            ["model", "reason"],
            registry=r,
        )

    def count_usage(self, model: str, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int):
            self.tokens.labels(model, "in").inc(prompt)
        if isinstance(completion, int):
            self.tokens.labels(model, "out").inc(completion)

    def watch(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Add figures read at scrape time (loaded models, queues, restarts)."""
        self.registry.register(_CallbackCollector(collect))


class _CallbackCollector(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()
