"""The HTTP edge of the pipeline, shared by every protocol: a decoded request and its HTTP
context (request id, key, priority, keep_alive, cache-control) into a `PipelineRequest`, and the
gateway's own headers on the answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar
from urllib.parse import quote

from starlette.requests import Request

from hearth.api.services import services_of
from hearth.config import parse_duration
from hearth.errors import ClientDisconnected, InvalidRequest, ShuttingDown
from hearth.observability.metrics import HearthMetrics
from hearth.pipeline.request import PipelineRequest
from hearth.routing.request import Trace
from hearth.wire.base import ModelRequest
from hearth.wire.outcome import Completion, CompletionStream

PRIORITY_HEADER = "x-hearth-priority"
PRIORITY_MIN, PRIORITY_MAX = -10, 10
T = TypeVar("T")


async def run_pipeline(
    request: Request, payload: ModelRequest, path: str, *, capability: str
) -> Completion | CompletionStream:
    """Send a validated OpenAI-shaped request down the pipeline. `path` is the OpenAI path
    ("/v1/chat/completions", ...); `capability` what the model must support."""
    call = pipeline_request(request, payload, path, capability)
    return await _while_the_client_waits(request, services_of(request).pipeline.run(call))


async def load_model(request: Request, payload: ModelRequest) -> str:
    """Load (or with keep_alive 0 unload) a model, admitted like a request to it."""
    call = pipeline_request(request, payload, "", "load")
    return await _while_the_client_waits(request, services_of(request).pipeline.load(call))


async def count_tokens(request: Request, payload: ModelRequest) -> int:
    """The input tokens of a chat request, admitted like a request to its model."""
    call = pipeline_request(request, payload, "", "chat")
    return await services_of(request).pipeline.count_tokens(call)


def pipeline_request(
    request: Request, payload: ModelRequest, path: str, capability: str
) -> PipelineRequest:
    """The pipeline's view of a decoded request and its HTTP context."""
    fields = payload.model_dump(exclude_unset=True, by_alias=True)
    keep_alive = _keep_alive(fields.pop("keep_alive", None))
    trace = Trace(started=request.state.started)
    request.state.trace = trace  # the access log and metrics read it once the answer has ended
    return PipelineRequest(
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
        inputs=payload.inputs(),
        headers=request.headers,
    )


async def _while_the_client_waits(request: Request, work: Awaitable[T]) -> T:
    """`work`, cancelled as soon as the client hangs up (so a queued request never starts and
    an engine stops generating for nobody), or answered with 503 when Hearth's drain time ran
    out at shutdown. A streamed answer watches for itself once it starts (`RelayResponse`)."""
    task = asyncio.current_task()
    assert task is not None
    trace: Trace = request.state.trace
    client_left = False

    async def watch() -> None:
        nonlocal client_left
        receive = request.receive
        while (await receive())["type"] != "http.disconnect":
            pass
        client_left = True
        trace.status = ClientDisconnected.status_code
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if task.uncancel():
            raise  # cancelled again, or for another reason: let it through
        if client_left:
            raise ClientDisconnected("The client closed the connection.") from None
        raise ShuttingDown() from None
    finally:
        watcher.cancel()


def gateway_headers(request: Request, outcome: Completion | CompletionStream) -> dict[str, str]:
    """Where the answer came from, what Hearth itself added to the time to its start, and the
    caller's rate-limit figures."""
    trace: Trace = request.state.trace
    overhead = max(0.0, time.perf_counter() - trace.started - trace.upstream_seconds)
    metrics: HearthMetrics = request.app.state.metrics
    metrics.gateway_overhead.observe(overhead)
    headers = {
        "x-hearth-deployment": header_value(outcome.deployment),
        "x-hearth-attempts": str(outcome.attempts),
        "x-hearth-overhead-ms": f"{overhead * 1000:.2f}",
    }
    if trace.cache is not None:
        headers["x-hearth-cache"] = header_value(trace.cache)
    if trace.route_reason is not None:
        headers["x-hearth-route-reason"] = header_value(trace.route_reason)
    headers.update({k: header_value(v) for k, v in outcome.headers.items()})  # x-ratelimit-*
    return headers


_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F))  # printable ASCII, '%' included


def header_value(text: str) -> str:
    """`text` fit for an HTTP header: printable ASCII kept, anything else (a newline, which
    would end the header, or a character latin-1 cannot encode) percent-encoded as UTF-8.
    Deployment names can come from an upstream's model list or a settings file."""
    if text.isascii() and text.isprintable():
        return text
    return quote(text, safe=_HEADER_SAFE)


def _priority(request: Request) -> int:
    """Who goes first when a model's slots are all busy: higher first, default 0, from
    PRIORITY_MIN to PRIORITY_MAX (400 outside, so no caller can outrank every other)."""
    raw = request.headers.get(PRIORITY_HEADER)
    if raw is None:
        return 0
    value = raw.strip()
    sign = value[:1] in ("+", "-")
    if not (value[sign:].isascii() and value[sign:].isdigit() and len(value) <= 4):
        raise InvalidRequest(
            f"The {PRIORITY_HEADER} header must be an integer from {PRIORITY_MIN} to "
            f"{PRIORITY_MAX}, not {raw[:20]!r}."
        )
    priority = int(value)
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidRequest(
            f"The {PRIORITY_HEADER} header must be from {PRIORITY_MIN} to {PRIORITY_MAX}, "
            f"not {priority}."
        )
    return priority


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
