"""Calling a local engine: hold the model (loading it if needed), then send the request, retrying
once if the engine refused the connection because it had just died."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hearth.deployments.deployment import LocalDeployment
from hearth.engines.supervisor import EngineSupervisor
from hearth.errors import (
    EngineFailed,
    UpstreamDisconnected,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from hearth.observability.metrics import HearthMetrics
from hearth.observability.request_id import REQUEST_ID_HEADER
from hearth.observability.tracing import Tracing
from hearth.routing.prompt_prefix import CHUNK_BYTES, prompt_fingerprint
from hearth.routing.request import RoutedRequest
from hearth.routing.streams import OpenedStream
from hearth.scheduler.scheduler import Scheduler
from hearth.upstream.client import Form, UpstreamClient

log = logging.getLogger(__name__)
T = TypeVar("T")


async def call_engine(
    scheduler: Scheduler,
    upstream: UpstreamClient,
    deployment: LocalDeployment,
    request: RoutedRequest,
    body: bytes | Form,
    stack: contextlib.AsyncExitStack,
    tracing: Tracing,
    metrics: HearthMetrics,
    path: str | None = None,
) -> dict[str, Any] | OpenedStream:
    """The engine's answer, or its opened stream. The model stays held (never unloaded) until
    `stack` closes. A model with replicas answers from the one its scheduler picks for the
    prompt's prefix; the trace and `hearth_replica_choices_total` say which and why. `body` is
    JSON, or a multipart `Form` sent to the engine's own `path` (a whisper.cpp server's)."""
    what = f"the engine for model '{deployment.name}'"
    headers = {REQUEST_ID_HEADER: request.request_id}
    tracing.inject(headers)
    url_path = path or "/v1" + request.path
    replicas = deployment.replicas
    by_prefix = replicas.max > 1 and replicas.routing == "affinity"
    prefix = prompt_fingerprint(request.fields) if by_prefix else ()
    # Waiting for the model to load and for one of its slots.
    with tracing.span("queue", {"hearth.model": deployment.name}) as span:
        lease = await stack.enter_async_context(
            scheduler.hold(deployment, request.keep_alive, request.priority, prefix)
        )
        if span is not None and replicas.max > 1:
            span.set_attribute("hearth.replica", lease.replica)
            span.set_attribute("hearth.replica.choice", lease.reason)
            span.set_attribute("hearth.replica.prefix_bytes", lease.matched * CHUNK_BYTES)
    if replicas.max > 1:  # a model with one engine has nothing to choose
        trace = request.trace
        trace.replica, trace.replica_choice = lease.replica, lease.reason
        trace.prefix_matched = lease.matched * CHUNK_BYTES
        metrics.replica_choices.labels(deployment.name, lease.reason).inc()
    supervisor = lease.supervisor
    if not request.stream:
        return await _to_engine(
            supervisor, lambda base: upstream.post(base + url_path, body, what, headers)
        )

    assert not isinstance(body, Form)  # transcriptions, the only forms, are never streamed

    async def open_stream(base: str) -> OpenedStream:
        stream = await stack.enter_async_context(
            upstream.open_stream(base + url_path, body, what, headers)
        )

        async def crashed() -> None:
            await supervisor.connection_failed(base)

        return await OpenedStream.start(stream, on_crash=crashed)

    opened = await _to_engine(supervisor, open_stream)
    lease.prompt_evaluated()  # its first event: the replica's backlog no longer holds the prompt
    return opened


async def _to_engine(supervisor: EngineSupervisor, call: Callable[[str], Awaitable[T]]) -> T:
    """Call the engine; if it refused the connection because it just died, wait for the
    restart and try once more (the request never reached it). A request that broke off after
    the engine took it is not retried: the client gets the error."""
    for attempt in (1, 2):
        base = await supervisor.endpoint()
        try:
            return await call(base)
        except UpstreamUnavailable:
            if attempt == 2 or not await supervisor.connection_failed(base):
                raise
            log.info(
                "engine for %s was gone before the request reached it; retrying", supervisor.name
            )
        except UpstreamDisconnected:
            await supervisor.connection_failed(base)
            raise
        except UpstreamStatusError as exc:
            if exc.status_code < 500:
                raise  # the engine's word on the request itself: relayed as it is
            log.warning(
                "engine for %s answered HTTP %d: %s", supervisor.name, exc.status_code, exc.message
            )
            raise EngineFailed(
                f"The engine for model '{supervisor.name}' could not answer this request "
                f"(HTTP {exc.status_code}); Hearth's log has its message."
            ) from None
    raise AssertionError("unreachable")
