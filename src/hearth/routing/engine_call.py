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
from hearth.observability.request_id import REQUEST_ID_HEADER
from hearth.observability.tracing import Tracing
from hearth.routing.request import RoutedRequest
from hearth.routing.streams import OpenedStream
from hearth.scheduler.scheduler import Scheduler
from hearth.upstream.client import UpstreamClient

log = logging.getLogger(__name__)
T = TypeVar("T")


async def call_engine(
    scheduler: Scheduler,
    upstream: UpstreamClient,
    deployment: LocalDeployment,
    request: RoutedRequest,
    body: bytes,
    stack: contextlib.AsyncExitStack,
    tracing: Tracing,
) -> dict[str, Any] | OpenedStream:
    """The engine's answer, or its opened stream. The model stays held (never unloaded) until
    `stack` closes."""
    what = f"the engine for model '{deployment.name}'"
    headers = {REQUEST_ID_HEADER: request.request_id}
    tracing.inject(headers)
    url_path = "/v1" + request.path
    # Waiting for the model to load and for one of its slots.
    with tracing.span("queue", {"hearth.model": deployment.name}):
        supervisor = await stack.enter_async_context(
            scheduler.use(deployment, request.keep_alive, request.priority)
        )
    if not request.stream:
        return await _to_engine(
            supervisor, lambda base: upstream.post(base + url_path, body, what, headers)
        )

    async def open_stream(base: str) -> OpenedStream:
        stream = await stack.enter_async_context(
            upstream.open_stream(base + url_path, body, what, headers)
        )

        async def crashed() -> None:
            await supervisor.connection_failed(base)

        return await OpenedStream.start(stream, on_crash=crashed)

    return await _to_engine(supervisor, open_stream)


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
