"""The HTTP edge of the pipeline, shared by every protocol: a decoded request and its HTTP
context (request id, key, priority, keep_alive, cache-control) into a `PipelineRequest`, and the
gateway's own headers on the answer."""

from __future__ import annotations

import time

from starlette.requests import Request

from hearth.api.services import services_of
from hearth.config import parse_duration
from hearth.errors import InvalidRequest
from hearth.observability.metrics import HearthMetrics
from hearth.pipeline.request import PipelineRequest
from hearth.routing.request import Trace
from hearth.wire.base import ModelRequest
from hearth.wire.outcome import Completion, CompletionStream

PRIORITY_HEADER = "x-hearth-priority"


async def run_pipeline(
    request: Request, payload: ModelRequest, path: str, *, capability: str
) -> Completion | CompletionStream:
    """Send a validated OpenAI-shaped request down the pipeline. `path` is the OpenAI path
    ("/v1/chat/completions", ...); `capability` what the model must support."""
    fields = payload.model_dump(exclude_unset=True, by_alias=True)
    keep_alive = _keep_alive(fields.pop("keep_alive", None))
    trace = Trace(started=request.state.started)
    request.state.trace = trace  # the access log and metrics read it once the answer has ended
    call = PipelineRequest(
        model=payload.model,
        path=path,
        capability=capability,
        fields=fields,
        request_id=request.state.request_id,
        trace=trace,
        caller=getattr(request.state, "key", None),
        priority=_priority(request),
        keep_alive=keep_alive,
        cache_control=request.headers.get("cache-control", "").lower(),
    )
    return await services_of(request).pipeline.run(call)


def gateway_headers(request: Request, outcome: Completion | CompletionStream) -> dict[str, str]:
    """Where the answer came from, what Hearth itself added to the time to its start, and the
    caller's rate-limit figures."""
    trace: Trace = request.state.trace
    overhead = max(0.0, time.perf_counter() - trace.started - trace.upstream_seconds)
    metrics: HearthMetrics = request.app.state.metrics
    metrics.gateway_overhead.observe(overhead)
    headers = {
        "x-hearth-deployment": outcome.deployment,
        "x-hearth-attempts": str(outcome.attempts),
        "x-hearth-overhead-ms": f"{overhead * 1000:.2f}",
    }
    if trace.cache is not None:
        headers["x-hearth-cache"] = trace.cache
    headers.update(outcome.headers)  # a key's x-ratelimit-*
    return headers


def _priority(request: Request) -> int:
    """Who goes first when a model's slots are all busy: higher first, default 0."""
    raw = request.headers.get(PRIORITY_HEADER)
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(
            f"The {PRIORITY_HEADER} header must be an integer, not {raw!r}."
        ) from None


def _keep_alive(value: object) -> float | None:
    """The per-request keep_alive extension ("5m", 30, -1), validated."""
    if value is None:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise InvalidRequest("'keep_alive' must be a duration such as 300, '5m' or -1.")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise InvalidRequest(
            f"Invalid value for 'keep_alive': {exc}.", param="keep_alive"
        ) from None
