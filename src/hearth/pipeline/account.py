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
from hearth.routing.request import Escalation
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
        audio_seconds = _seconds(usage.get("seconds"))  # a transcription's (type "duration")
        cached = trace.cache == "hit"
        deployment = (
            None if trace.deployment is None else self.catalogue().deployment(trace.deployment)
        )
        price = None if deployment is None else deployment.price
        cost = 0.0 if cached or price is None else price.of(prompt, completion, audio_seconds)
        now = time.perf_counter()
        for escalation in trace.escalations:
            self._rejected_attempt(request, model, escalation)
        self._record(
            request,
            model=model,
            deployment=trace.deployment,
            prompt=prompt,
            completion=completion,
            cached=cached,
            status=status,
            latency_ms=(now - trace.started) * 1000,
            ttft_ms=None if trace.ttft is None else trace.ttft * 1000,
            cost=cost,
            audio_seconds=audio_seconds,
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

    def _rejected_attempt(
        self, request: PipelineRequest, model: str, escalation: Escalation
    ) -> None:
        """A cascade attempt whose answer was rejected: generated, so recorded, priced and
        charged like any, in a row of its own marked `escalated`."""
        usage = escalation.usage or {}
        prompt = _tokens(usage.get("prompt_tokens"))
        completion = _tokens(usage.get("completion_tokens"))
        deployment = self.catalogue().deployment(escalation.deployment)
        cost = 0.0 if deployment is None else deployment.price.of(prompt, completion)
        self._record(
            request,
            model=model,
            deployment=escalation.deployment,
            prompt=prompt,
            completion=completion,
            status=200,  # the deployment answered; the route's checks turned the answer down
            cost=cost,
            escalated=True,
        )
        caller = request.caller
        if self.keys is not None and caller is not None:
            self.keys.charge(caller, prompt + completion, cost)
        self.metrics.count_usage(model, escalation.usage)

    def _record(
        self,
        request: PipelineRequest,
        *,
        model: str,
        deployment: str | None,
        prompt: int,
        completion: int,
        status: int,
        cost: float,
        cached: bool = False,
        latency_ms: float = 0.0,
        ttft_ms: float | None = None,
        escalated: bool = False,
        audio_seconds: float = 0.0,
    ) -> None:
        """One usage row (every row has every column: rows are written in batches)."""
        if self.usage is None:
            return
        caller = request.caller
        self.usage.record(
            {
                "time": time.time(),
                "request_id": request.request_id,
                "key_id": None if caller is None else caller.id,
                "team": None if caller is None else caller.team,
                "model": model,
                "deployment": deployment,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cached": cached,
                "status": status,
                "latency_ms": latency_ms,
                "ttft_ms": ttft_ms,
                "cost": cost,
                "escalated": escalated,
                "audio_seconds": audio_seconds,
            }
        )


def _tokens(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if 0 < value < float("inf") else 0.0
