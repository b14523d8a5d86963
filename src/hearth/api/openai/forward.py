"""Sending a validated OpenAI request to the engine that serves its model, streamed or not."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from hearth.api.observe import REQUEST_ID_HEADER
from hearth.api.openai.protocol import SamplingParams
from hearth.api.services import services_of
from hearth.config import parse_duration
from hearth.engines.supervisor import EngineSupervisor
from hearth.errors import APIError, EngineCrashed, EngineUnavailable, InvalidRequest
from hearth.observability.metrics import HearthMetrics
from hearth.upstream.client import EventStream

log = logging.getLogger(__name__)

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
T = TypeVar("T")


async def forward(
    request: Request, payload: SamplingParams, path: str, *, capability: str
) -> Response:
    services = services_of(request)
    deployment = services.catalogue.resolve(payload.model)
    request.state.model = deployment.name  # the metrics' model label
    if capability not in deployment.capabilities.names():
        raise InvalidRequest(
            f"The model '{deployment.name}' does not support {capability}; it supports: "
            f"{', '.join(deployment.capabilities.names())}.",
            param="model",
        )
    fields = {**deployment.defaults, **payload.model_dump(exclude_unset=True, by_alias=True)}
    keep_alive = _keep_alive(fields.pop("keep_alive", None))
    priority = _priority(request)
    deployment.launcher.prepare_request(fields)
    body = json.dumps(fields).encode()
    what = f"the engine for model '{deployment.name}'"
    headers = {REQUEST_ID_HEADER: request.state.request_id}
    metrics: HearthMetrics = request.app.state.metrics

    if not payload.stream:
        async with services.scheduler.use(deployment, keep_alive, priority) as supervisor:
            answer = await _to_engine(
                supervisor,
                lambda base: services.upstream.post(base + path, body, what, headers),
            )
        answer["model"] = deployment.name
        metrics.count_usage(deployment.name, answer.get("usage"))
        request.state.usage = answer.get("usage")
        return JSONResponse(answer)

    # Open the stream before answering, so a refusal still gets its own HTTP status. The model
    # is held until the stream ends, however it ends.
    stack = contextlib.AsyncExitStack()
    try:
        supervisor = await stack.enter_async_context(
            services.scheduler.use(deployment, keep_alive, priority)
        )

        async def open_stream(base: str) -> tuple[str, EventStream]:
            stream = await stack.enter_async_context(
                services.upstream.open_stream(base + path, body, what, headers)
            )
            return base, stream

        base, stream = await _to_engine(supervisor, open_stream)
    except BaseException:
        await stack.aclose()
        raise
    return StreamingResponse(
        _relay(stream, stack, supervisor, base, _StreamMeter(metrics, deployment.name, request)),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
        # Runs even when the client went away before the first chunk was sent.
        background=BackgroundTask(stack.aclose),
    )


PRIORITY_HEADER = "x-hearth-priority"


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


async def _to_engine(supervisor: EngineSupervisor, call: Callable[[str], Awaitable[T]]) -> T:
    """Call the engine; if it refused the connection because it just died, wait for the
    restart and try once more (the request never reached it). A request that broke off after
    the engine took it is not retried: the client gets the error."""
    for attempt in (1, 2):
        base = await supervisor.endpoint()
        try:
            return await call(base)
        except EngineUnavailable:
            if attempt == 2 or not await supervisor.connection_failed(base):
                raise
            log.info(
                "engine for %s was gone before the request reached it; retrying", supervisor.name
            )
        except EngineCrashed:
            await supervisor.connection_failed(base)
            raise
    raise AssertionError("unreachable")


async def _relay(
    stream: EventStream,
    stack: contextlib.AsyncExitStack,
    supervisor: EngineSupervisor,
    base: str,
    meter: _StreamMeter,
) -> AsyncIterator[bytes]:
    """Relay events as they come; a failure mid-stream ends with an error event and [DONE], so a
    client never mistakes a broken answer for a complete one. Leaving early (the client hung up)
    closes the engine connection, which makes llama-server stop generating."""
    try:
        async for events in stream.events():
            meter.saw(events)
            yield events
    except APIError as exc:
        log.warning("stream for model %s failed mid-way: %s", supervisor.name, exc.message)
        if isinstance(exc, EngineCrashed):
            await supervisor.connection_failed(base)
        yield b"data: " + json.dumps(exc.to_body()).encode() + b"\n\ndata: [DONE]\n\n"
    finally:
        meter.done()
        await stack.aclose()


class _StreamMeter:
    """Time to first chunk and token usage of a relayed stream, for the metrics. Usage is read
    only from events that mention it (the final chunk), so most chunks are not parsed."""

    def __init__(self, metrics: HearthMetrics, model: str, request: Request) -> None:
        self.metrics = metrics
        self.model = model
        self.state = request.state
        self.started: float = request.state.started
        self.first = True
        self.usage: dict[str, Any] | None = None

    def saw(self, events: bytes) -> None:
        if self.first:
            self.first = False
            elapsed = time.perf_counter() - self.started
            self.metrics.time_to_first_token.labels(self.model).observe(elapsed)
            self.state.ttft = elapsed
        if b'"usage"' in events:
            for line in events.splitlines():
                if line.startswith(b"data: {"):
                    with contextlib.suppress(ValueError):
                        usage = json.loads(line[6:]).get("usage")
                        if isinstance(usage, dict):
                            self.usage = usage

    def done(self) -> None:
        self.metrics.count_usage(self.model, self.usage)
        self.state.usage = self.usage
