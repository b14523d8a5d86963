"""Sending a validated OpenAI request to its model's deployments (through the router), and
answering in OpenAI's shape, streamed or not."""

from __future__ import annotations

import time

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from hearth.api.accounting import admit, record_usage
from hearth.api.openai.protocol import ModelRequest
from hearth.api.relay import RelayResponse
from hearth.api.services import services_of
from hearth.config import parse_duration
from hearth.errors import APIError, InvalidRequest
from hearth.observability.metrics import HearthMetrics
from hearth.routing.outcome import Completion, CompletionStream
from hearth.routing.router import RoutedRequest, Trace

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
PRIORITY_HEADER = "x-hearth-priority"


async def forward(
    request: Request, payload: ModelRequest, path: str, *, capability: str
) -> Response:
    """Route the request and answer it in OpenAI's shape."""
    return respond(await dispatch(request, payload, path, capability=capability), request)


def respond(outcome: Completion | CompletionStream, request: Request | None = None) -> Response:
    """An outcome as an OpenAI HTTP response: JSON, or server-sent events. Given the request,
    the gateway's headers (deployment, attempts, overhead, cache) are added."""
    headers = gateway_headers(request, outcome) if request is not None else {}
    if isinstance(outcome, Completion):
        return JSONResponse(outcome.body, headers=headers)
    return RelayResponse(
        outcome.events,
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **headers},
        # Runs even when the client went away before the first chunk was sent.
        background=BackgroundTask(outcome.aclose),
    )


def gateway_headers(request: Request, outcome: Completion | CompletionStream) -> dict[str, str]:
    """Where the answer came from and what Hearth itself added to the time to its start."""
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
    headers.update(getattr(request.state, "ratelimit", None) or {})  # a key's x-ratelimit-*
    return headers


async def dispatch(
    request: Request, payload: ModelRequest, path: str, *, capability: str
) -> Completion | CompletionStream:
    """Send a validated request to a deployment of its model. `path` is the OpenAI path
    ("/v1/chat/completions" or "/v1/completions"); `capability` what the model must support."""
    services = services_of(request)
    route = services.catalogue.resolve(payload.model)
    request.state.model = route.name  # the metrics' model label
    await admit(request, payload.model, route.name)  # scopes, budgets, rate limits
    fields = payload.model_dump(exclude_unset=True, by_alias=True)
    keep_alive = _keep_alive(fields.pop("keep_alive", None))
    trace = Trace(started=request.state.started)
    request.state.trace = trace
    routed = RoutedRequest(
        route=route,
        path=path.removeprefix("/v1"),
        fields=fields,
        capability=capability,
        request_id=request.state.request_id,
        trace=trace,
        on_done=lambda trace: _finished(request, route.name, trace),
        keep_alive=keep_alive,
        priority=_priority(request),
        cache_control=request.headers.get("cache-control", "").lower(),
    )
    try:
        return await services.router.complete(routed)
    except APIError as exc:
        record_usage(request, route.name, trace, exc.status_code)
        raise
    finally:
        request.state.deployment = trace.deployment
        request.state.attempts = trace.attempts
        request.state.cache = trace.cache


def _finished(request: Request, model: str, trace: Trace) -> None:
    """Metrics and access-log fields of an answer that has ended."""
    state = request.state
    state.usage, state.ttft = trace.usage, trace.ttft
    state.deployment, state.attempts, state.cache = trace.deployment, trace.attempts, trace.cache
    record_usage(request, model, trace, 200)
    if trace.cache == "hit":
        return  # no model did any work
    metrics: HearthMetrics = request.app.state.metrics
    metrics.count_usage(model, trace.usage)
    if trace.ttft is None:
        return
    metrics.time_to_first_token.labels(model).observe(trace.ttft)
    completion = (trace.usage or {}).get("completion_tokens")
    if isinstance(completion, int) and completion > 1:
        decoding = time.perf_counter() - trace.started - trace.ttft
        metrics.time_per_output_token.labels(model).observe(decoding / (completion - 1))


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
