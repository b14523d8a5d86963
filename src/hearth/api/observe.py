"""Per-request bookkeeping as plain ASGI: the request id (`x-request-id` honoured or generated,
returned, and left in `request.state` for upstream calls), request counts, durations and
requests in flight, and one access-log line per request. What the request went through (model,
deployment, attempts, cache, usage) comes from the pipeline's `Trace` in `request.state.trace`, or
`request.state.model` for endpoints outside the pipeline."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hearth.observability.logs import ACCESS_LOGGER
from hearth.observability.metrics import HearthMetrics
from hearth.observability.request_id import REQUEST_ID_HEADER, request_id_of
from hearth.observability.tracing import Tracing
from hearth.routing.request import Trace

access_log = logging.getLogger(ACCESS_LOGGER)

UNTRACKED = ("/metrics", "/health")


class RequestObserver:
    def __init__(
        self, app: ASGIApp, metrics: HearthMetrics, tracing: Tracing | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing or Tracing()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started"] = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            if self.tracing.enabled:
                await self._traced(scope, receive, send_observed, request_id)
            else:
                await self.app(scope, receive, send_observed)
        finally:
            self.metrics.in_flight.dec()
            endpoint = _endpoint(scope)
            if endpoint not in UNTRACKED:
                trace = state.get("trace")
                model = (trace.model if trace is not None else state.get("model")) or ""
                deployment = (trace.deployment if trace is not None else None) or ""
                elapsed = time.perf_counter() - state["started"]
                if trace is not None and trace.status is not None:
                    # What the client really got: a stream sent as 200 that broke off, was
                    # left by the client (499) or cut at shutdown (503).
                    status = trace.status
                self.metrics.requests.labels(endpoint, model, deployment, str(status)).inc()
                self.metrics.request_duration.labels(endpoint).observe(elapsed)
                _log_request(scope, state, status, elapsed)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status = 0

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        attributes = {"http.request.method": scope["method"], "hearth.request_id": request_id}
        with self.tracing.request_span(scope["method"], headers, attributes) as span:
            await self.app(scope, receive, send_noting_status)
            span.update_name(f"{scope['method']} {_endpoint(scope)}")
            span.set_attribute("http.route", _endpoint(scope))
            span.set_attribute("http.response.status_code", status)
            state = scope.get("state", {})
            trace = state.get("trace")
            model = trace.model if trace is not None else state.get("model")
            if model:
                span.set_attribute("hearth.model", model)


def _endpoint(scope: Scope) -> str:
    """The matched route's path template (bounded: never the raw path), set by the router;
    'other' when no route matched (unknown paths, bodies refused before routing)."""
    return str(getattr(scope.get("route"), "path", "other"))


# Characters that would start a new line (or hide text) in a log file or a terminal.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _printable(text: str | None) -> str | None:
    """`text` with control characters escaped (`\\n`, `\\x1b`), so that what a client sent
    can never forge a log line."""
    if text is None or _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(lambda m: repr(m[0])[1:-1], text)


def _log_request(scope: Scope, state: dict[str, Any], status: int, elapsed: float) -> None:
    trace: Trace | None = state.get("trace")
    usage = (trace.usage if trace is not None else None) or {}
    ttft = None if trace is None else trace.ttft
    raw_path = scope.get("raw_path")  # as sent, still percent-encoded: %0A stays %0A
    path = raw_path.decode("latin-1") if raw_path else scope["path"]
    access_log.info(
        "%s %s %s",
        _printable(scope["method"]),
        _printable(path),
        status,
        extra={
            "fields": {
                "request_id": state["request_id"],
                "status": status,
                "model": _printable(state.get("model") if trace is None else trace.model),
                "deployment": None if trace is None else _printable(trace.deployment),
                "attempts": None if trace is None else trace.attempts,
                "cache": None if trace is None else trace.cache,
                "replica": None if trace is None else trace.replica,
                "replica_choice": None if trace is None else trace.replica_choice,
                "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens"),
                "latency_ms": round(elapsed * 1000, 1),
                "ttft_ms": None if ttft is None else round(ttft * 1000, 1),
            }
        },
    )
