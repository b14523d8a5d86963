"""The account step: once an answer has ended (or failed), one usage row, the caller's spend and
token counters, and the model's token and latency metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hearth.auth.service import KeyService
from hearth.deployments.catalogue import Catalogue
from hearth.observability.metrics import HearthMetrics
from hearth.pipeline.request import PipelineRequest
from hearth.usage.recorder import UsageRecorder


@dataclass
class Accountant:
    catalogue: Callable[[], Catalogue]
    metrics: HearthMetrics
    usage: UsageRecorder | None = None
    keys: KeyService | None = None

    def finished(self, request: PipelineRequest, status: int) -> None:
        """Account for a request that reached routing and has ended with `status`."""
        trace = request.trace
        model = trace.model or request.model
        usage = trace.usage or {}
        prompt = _tokens(usage.get("prompt_tokens"))
        completion = _tokens(usage.get("completion_tokens"))
        cached = trace.cache == "hit"
        deployment = (
            None if trace.deployment is None else self.catalogue().deployment(trace.deployment)
        )
        price = None if deployment is None else deployment.price
        cost = 0.0 if cached or price is None else price.of(prompt, completion)
        now = time.perf_counter()
        if self.usage is not None:
            caller = request.caller
            self.usage.record(
                {
                    "time": time.time(),
                    "request_id": request.request_id,
                    "key_id": None if caller is None else caller.id,
                    "team": None if caller is None else caller.team,
                    "model": model,
                    "deployment": trace.deployment,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "cached": cached,
                    "status": status,
                    "latency_ms": (now - trace.started) * 1000,
                    "ttft_ms": None if trace.ttft is None else trace.ttft * 1000,
                    "cost": cost,
                }
            )
        if self.keys is not None and request.caller is not None and not cached:
            self.keys.charge(request.caller, prompt + completion, cost)
        if status != 200 or cached:
            return  # metrics of work a model did
        self.metrics.count_usage(model, trace.usage)
        if trace.ttft is None:
            return
        self.metrics.time_to_first_token.labels(model).observe(trace.ttft)
        if completion > 1:
            decoding = now - trace.started - trace.ttft
            self.metrics.time_per_output_token.labels(model).observe(decoding / (completion - 1))


def _tokens(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0
