"""Optional OpenTelemetry tracing: a span per request with children for routing, queueing and
each upstream call, exported over OTLP/HTTP. Off by default; the packages come with the `otel`
extra. When off, `span()` hands back a shared no-op context, so the request path pays nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

from hearth.config import TracingSettings
from hearth.errors import ConfigError

_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()


class Tracing:
    def __init__(self, tracer: Any = None, provider: Any = None, propagator: Any = None) -> None:
        self._tracer = tracer
        self._provider = provider
        self._propagator = propagator

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def span(
        self, name: str, attributes: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[Any]:
        if self._tracer is None:
            return _NOTHING
        span: AbstractContextManager[Any] = self._tracer.start_as_current_span(
            name, attributes=dict(attributes or {})
        )
        return span

    @contextlib.contextmanager
    def request_span(
        self, name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]
    ) -> Iterator[Any]:
        """The root span of a request, a child of the caller's `traceparent` when it sent one."""
        if self._tracer is None:
            yield None
            return
        parent = self._propagator.extract(dict(headers))
        with self._tracer.start_as_current_span(
            name, context=parent, kind=_server_kind(), attributes=dict(attributes)
        ) as span:
            yield span

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Add `traceparent` for the current span to an upstream request's headers."""
        if self._propagator is not None:
            self._propagator.inject(headers)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


def _server_kind() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.SERVER


def start_tracing(settings: TracingSettings) -> Tracing:
    if not settings.enabled:
        return Tracing()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        raise ConfigError(
            "tracing.enabled needs OpenTelemetry: pip install 'hearth-gateway[otel]'"
        ) from None
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBasedTraceIdRatio(settings.sample_ratio),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint)))
    return Tracing(provider.get_tracer("hearth"), provider, TraceContextTextMapPropagator())
