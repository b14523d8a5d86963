"""Sending a request to the deployments of its model: strategy order, retries with backoff before
the first byte, fallback to the next deployment, circuit breakers, and the response cache.

A request is retried (same deployment, exponential backoff with jitter, honouring Retry-After)
only for failures that happen before any of the answer reached Hearth: connection errors,
timeouts, 429 and 5xx. After that it falls back to the next deployment in the route's order.
Streams are opened and their first event read before the client gets a status, so a stream that
fails at once is retried too; once output has started nothing is retried, and a failure ends the
stream with an error event. Local engines are not retried (Hearth restarts them itself and the
engine call already retries a request refused by an engine that had just died) but they do fall
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from hearth.config import CascadeSettings, RoutingSettings
from hearth.deployments.deployment import (
    Deployment,
    LocalDeployment,
    RemoteDeployment,
    Route,
    Target,
)
from hearth.errors import (
    APIError,
    EngineNotInstalled,
    InvalidRequest,
    ModelTooLarge,
    NoDeploymentAvailable,
    ServerBusy,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamStatusError,
)
from hearth.observability.metrics import HearthMetrics
from hearth.observability.request_id import REQUEST_ID_HEADER
from hearth.observability.tracing import Tracing
from hearth.routing.cache import ResponseCache, cache_key, is_deterministic
from hearth.routing.cascade import as_client_body, as_stream, rejection, upstream_fields
from hearth.routing.constrained import constrain, schema_error
from hearth.routing.engine_call import call_engine
from hearth.routing.fan_out import gather_all, merge_answers, merge_streams, read_ahead, split
from hearth.routing.request import Escalation, RoutedRequest, Trace
from hearth.routing.rules import RouteRules, RuleBook, decide
from hearth.routing.strategies import order, saturated
from hearth.routing.streams import OpenedStream, relay, replay
from hearth.routing.tokens import count_input_tokens
from hearth.scheduler.scheduler import Scheduler
from hearth.upstream.client import Timeouts, UpstreamClient
from hearth.upstream.images import ImageFetcher
from hearth.upstream.speech import SpeechCall
from hearth.wire.outcome import Completion, CompletionStream

log = logging.getLogger(__name__)


GENERATING = frozenset({"chat", "completion"})


class _Saturated(Exception):
    """A remote deployment is at its max_concurrency and others remain to try."""


@dataclass
class Router:
    scheduler: Scheduler
    upstream: UpstreamClient
    settings: RoutingSettings
    metrics: HearthMetrics
    cache: ResponseCache | None = None
    max_entry_bytes: int = 1024 * 1024  # larger answers are not cached
    tracing: Tracing = field(default_factory=Tracing)
    rng: random.Random = field(default_factory=random.Random)
    rules: RuleBook = field(default_factory=RuleBook)  # task-aware routes (routing/rules.py)
    # Fetches http(s) images for local engines, which take them only inline (upstream/images.py).
    images: ImageFetcher | None = None

    async def complete(self, request: RoutedRequest) -> Completion | CompletionStream:
        attributes = {"hearth.model": request.route.name, "hearth.strategy": request.route.strategy}
        with self.tracing.span("route", attributes) as span:
            route_rules = self.rules.get(request.route)
            if route_rules is None:
                return await self._complete(request)
            request = await self._apply_rules(route_rules, request, span)
            try:
                return await self._complete(request)
            except APIError as exc:
                reason = request.trace.route_reason or ""
                exc.headers = {**(exc.headers or {}), "x-hearth-route-reason": reason}
                raise

    async def _apply_rules(
        self, route_rules: RouteRules, request: RoutedRequest, span: Any
    ) -> RoutedRequest:
        """The request as the route's rules send it, with the reason noted in its trace, the
        route span and the metrics."""

        async def embed(route: Route, texts: list[str]) -> list[list[float]]:
            return await self._embed(route, texts, request.request_id)

        decision = await decide(
            route_rules,
            request,
            embed,
            self._count_tokens,
            lambda deployment: self.scheduler.get(deployment.name) is not None,
        )
        request.trace.route_reason = decision.reason
        self.metrics.route_decisions.labels(request.route.name, decision.reason).inc()
        if span is not None:
            span.set_attribute("hearth.route.reason", decision.reason)
        if decision.route is None:
            return request
        return dataclasses.replace(request, route=decision.route, asked=request.route)

    async def _embed(self, route: Route, texts: list[str], request_id: str) -> list[list[float]]:
        """Embeddings of `texts` by `route`, through routing like any embeddings request (not
        accounted to the caller: it is Hearth's own work for the route)."""
        inner = RoutedRequest(
            route=route,
            path="/embeddings",
            fields={"model": route.name, "input": texts, "encoding_format": "float"},
            capability="embeddings",
            request_id=request_id,
            trace=Trace(started=time.perf_counter()),
        )
        answer = await self._complete(inner)
        if not isinstance(answer, Completion):  # never: embeddings are not streamed
            await answer.aclose()
            raise UpstreamError(f"'{route.name}' streamed embeddings")
        data = answer.body.get("data")
        items = sorted(
            (item for item in data if isinstance(item, dict)) if isinstance(data, list) else [],
            key=lambda item: int(item.get("index") or 0),
        )
        vectors = [item.get("embedding") for item in items]
        usable = [
            [float(x) for x in v]
            for v in vectors
            if isinstance(v, list) and v and all(isinstance(x, int | float) for x in v)
        ]
        if len(usable) != len(texts):
            raise UpstreamError(f"'{route.name}' answered with no usable embeddings")
        return usable

    async def _count_tokens(
        self, deployment: LocalDeployment, fields: dict[str, Any], request_id: str
    ) -> int:
        route = Route(deployment.name, [Target(deployment)])
        return await count_input_tokens(self.scheduler, self.upstream, route, fields, request_id)

    async def _complete(self, request: RoutedRequest) -> Completion | CompletionStream:
        route = request.route
        if request.capability in GENERATING:
            _check_choices(request, self.settings.max_choices)
        candidates = [
            t for t in route.targets if request.capability in t.deployment.capabilities.names()
        ]
        if not candidates:
            raise InvalidRequest(
                f"The model '{route.name}' does not support {request.capability}; it supports: "
                f"{', '.join(route.capabilities()) or 'nothing'}.",
                param="model",
            )
        if request.inputs:
            candidates = [t for t in candidates if _accepts(t.deployment, request.inputs)]
            if not candidates:
                raise InvalidRequest(
                    f"The model '{route.name}' does not accept {_described(request.inputs)}; "
                    "send text only, or use a model that does.",
                    param="messages",
                )
        key = self._cache_key(request)
        if key is not None and "no-cache" not in request.cache_control:
            cached = await self._cached(key, request)
            if cached is not None:
                return cached
        if key is not None:
            request.trace.cache = "miss"
            self.metrics.cache.labels("miss").inc()

        deployments = order(route.strategy, candidates, self.rng)
        if route.strategy == "cascade" and request.capability in GENERATING:
            checks = route.cascade or CascadeSettings()
            if not request.stream or checks.buffer_streams:
                return await self._cascade(request, deployments, checks, key)
        failures: list[str] = []
        last_error: APIError | None = None
        for position, deployment in enumerate(deployments):
            is_last = position == len(deployments) - 1
            if not deployment.stats.breaker.allows():
                failures.append(f"{deployment.name}: circuit open")
                continue
            if position and failures:
                self.metrics.fallbacks.labels(route.name).inc()
                log.info("%s: falling back to %s (%s)", route.name, deployment.name, failures[-1])
            try:
                return await self._try_deployment(deployment, request, is_last, key)
            except _Saturated:
                failures.append(f"{deployment.name}: at its concurrency limit")
            except APIError as exc:
                if not _falls_back(exc):
                    raise _with_attempts(exc, request.trace.attempts) from None
                failures.append(f"{deployment.name}: {exc.message}")
                last_error = exc
        if len(deployments) == 1 and last_error is not None:
            raise _with_attempts(last_error, request.trace.attempts)
        retry_after = min(
            (d.stats.breaker.retry_after() for d in deployments if not d.stats.breaker.allows()),
            default=None,
        )
        error = NoDeploymentAvailable(
            f"No deployment of '{route.name}' could answer: " + "; ".join(failures) + ".",
            retry_after=retry_after if last_error is None else None,
        )
        raise _with_attempts(error, request.trace.attempts)

    async def _cascade(
        self,
        request: RoutedRequest,
        deployments: list[Deployment],
        checks: CascadeSettings,
        key: str | None,
    ) -> Completion | CompletionStream:
        """Each deployment in turn answers whole, and the first answer that passes the checks
        (routing/cascade.py) is the client's; the last deployment's is taken unchecked, there
        being no one left to ask. A rejected answer's usage stays in the trace, for accounting."""
        route, trace = request.route, request.trace
        attempt = dataclasses.replace(request, fields=upstream_fields(checks, request.fields))
        failures: list[str] = []
        for position, deployment in enumerate(deployments):
            is_last = position == len(deployments) - 1
            if not deployment.stats.breaker.allows():
                failures.append(f"{deployment.name}: circuit open")
                continue
            try:
                outcome = await self._try_deployment(deployment, attempt, is_last, None)
            except _Saturated:
                failures.append(f"{deployment.name}: at its concurrency limit")
                continue
            except APIError as exc:
                if not _falls_back(exc):
                    raise _with_attempts(exc, trace.attempts) from None
                failures.append(f"{deployment.name}: {exc.message}")
                continue
            assert isinstance(outcome, Completion)  # attempts are never streamed
            if is_last:
                return await self._accepted(request, outcome, key)
            attributes = {"hearth.deployment": deployment.name}
            with self.tracing.span("cascade.check", attributes) as span:
                reason = await asyncio.to_thread(rejection, checks, request.fields, outcome.body)
                if span is not None:
                    span.set_attribute("hearth.cascade.rejected", reason or "")
            if reason is None:
                return await self._accepted(request, outcome, key)
            usage = outcome.body.get("usage")
            trace.escalations.append(
                Escalation(deployment.name, usage if isinstance(usage, dict) else None, reason)
            )
            trace.usage = None
            self.metrics.cascade_escalations.labels(route.name, reason).inc()
            failures.append(f"{deployment.name}: answer rejected ({reason})")
            log.info(
                "%s: %s's answer rejected (%s), escalating", route.name, deployment.name, reason
            )
        error = NoDeploymentAvailable(
            f"No deployment of '{route.name}' could answer: " + "; ".join(failures) + "."
        )
        raise _with_attempts(error, trace.attempts)

    async def _accepted(
        self, request: RoutedRequest, outcome: Completion, key: str | None
    ) -> Completion | CompletionStream:
        body = as_client_body(request.fields, outcome.body)
        escalations = len(request.trace.escalations)
        headers = {"x-hearth-escalations": str(escalations)}
        if not request.stream:
            if key is not None:  # stored once accepted: a rejected answer is never replayed
                await self._store(key, json.dumps({"d": outcome.deployment, "body": body}).encode())
            return dataclasses.replace(outcome, body=body, headers={**outcome.headers, **headers})
        request.trace.ttft = time.perf_counter() - request.trace.started
        wants_usage = bool((request.fields.get("stream_options") or {}).get("include_usage"))
        return CompletionStream(
            as_stream(body, wants_usage),
            outcome.deployment,
            _nothing,
            outcome.attempts,
            headers=headers,
        )

    async def _try_deployment(
        self, deployment: Deployment, request: RoutedRequest, is_last: bool, key: str | None
    ) -> Completion | CompletionStream:
        """Send to one deployment, retrying transient failures before the first byte."""
        if isinstance(deployment, RemoteDeployment) and saturated(deployment) and not is_last:
            raise _Saturated
        retries = self.settings.retries if isinstance(deployment, RemoteDeployment) else 0
        for retry in range(retries + 1):
            request.trace.attempts += 1
            try:
                outcome = await self._attempt(deployment, request, key)
            except APIError as exc:
                if not _counts_against(exc):
                    deployment.stats.breaker.record_success()  # it answered: it is up
                    self.metrics.upstream_attempts.labels(deployment.name, "rejected").inc()
                    raise
                self.metrics.upstream_attempts.labels(deployment.name, "failed").inc()
                if _transient(exc) and isinstance(deployment, RemoteDeployment):
                    # A local engine's health is its supervisor's to judge: a crash or a hang
                    # takes it out of service and restarts it, and requests wait for that. A
                    # breaker would refuse its model to everyone for the cooldown instead.
                    deployment.stats.breaker.record_failure()
                if retry == retries or not _transient(exc) or not deployment.stats.breaker.allows():
                    raise
                delay = self._backoff(retry, exc)
                if delay is None:
                    raise
                log.info(
                    "%s failed (%s); retry %d of %d in %.2f s",
                    deployment.name,
                    exc.message,
                    retry + 1,
                    retries,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            deployment.stats.breaker.record_success()
            self.metrics.upstream_attempts.labels(deployment.name, "ok").inc()
            return outcome
        raise AssertionError("unreachable")

    def _backoff(self, retry: int, exc: APIError) -> float | None:
        """Exponential backoff with full jitter; an upstream's Retry-After is honoured when it
        is within backoff_max, and a longer one means: fall back now instead."""
        ceiling = min(self.settings.backoff_max, self.settings.backoff * 2**retry)
        delay = self.rng.uniform(ceiling / 2, ceiling)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            if retry_after > self.settings.backoff_max:
                return None
            delay = max(delay, retry_after)
        return delay

    async def _attempt(
        self, deployment: Deployment, request: RoutedRequest, key: str | None
    ) -> Completion | CompletionStream:
        trace = request.trace
        stack = contextlib.AsyncExitStack()
        deployment.stats.in_flight += 1
        stack.callback(_leave, deployment)
        began = time.perf_counter()
        attributes = {
            "hearth.deployment": deployment.name,
            "hearth.deployment.kind": deployment.kind,
            "hearth.attempt": trace.attempts,
        }
        try:
            with self.tracing.span("upstream", attributes):
                if isinstance(deployment, LocalDeployment):
                    opened = await self._call_local(deployment, request, stack)
                else:
                    opened = await self._call_remote(deployment, request, stack)
        except BaseException:
            trace.upstream_seconds += time.perf_counter() - began
            await stack.aclose()
            raise
        waited = time.perf_counter() - began
        trace.upstream_seconds += waited
        trace.deployment = deployment.name
        deployment.stats.observe_ttft(waited)
        if isinstance(opened, dict):
            await stack.aclose()
            opened["model"] = request.public_name
            trace.usage = opened.get("usage") if isinstance(opened.get("usage"), dict) else None
            if key is not None:
                await self._store(key, json.dumps({"d": deployment.name, "body": opened}).encode())
            return Completion(opened, deployment.name, trace.attempts)
        trace.ttft = time.perf_counter() - trace.started
        store = None if key is None else lambda events: self._store_stream(key, deployment, events)
        return CompletionStream(
            relay(opened, request, deployment, stack, store),
            deployment.name,
            stack.aclose,
            trace.attempts,
        )

    async def _call_local(
        self, deployment: LocalDeployment, request: RoutedRequest, stack: contextlib.AsyncExitStack
    ) -> dict[str, Any] | OpenedStream:
        """The engine's answer: a forced tool call constrained (routing/constrained.py), and
        n > 1 choices as n engine requests at once (routing/fan_out.py)."""
        fields = _local_fields(deployment, request)
        speech_form = deployment.capabilities.speech_form
        if request.capability == "transcription" and speech_form is not None:
            # A whisper.cpp server: the audio as a multipart form (upstream/speech.py).
            speech = SpeechCall.of(speech_form.dialect, fields, request.path)
            answer = await call_engine(
                self.scheduler,
                self.upstream,
                deployment,
                request,
                speech.form(),
                stack,
                self.tracing,
                self.metrics,
                path=speech_form.path,
            )
            assert isinstance(answer, dict)  # never streamed
            return speech.answer(answer)
        if self.images is not None and "vision" in request.inputs:
            fields = await self.images.inline(fields)
        forced = None
        if request.capability == "chat":
            fields, forced = constrain(fields, deployment.capabilities)
        deployment.launcher.prepare_request(fields)  # after constraining: it may adjust that
        schema_param = forced.param if forced is not None else _schema_field(fields)

        async def one(
            part: dict[str, Any], part_stack: contextlib.AsyncExitStack
        ) -> dict[str, Any] | OpenedStream:
            body = json.dumps(part).encode()
            try:
                opened = await call_engine(
                    self.scheduler,
                    self.upstream,
                    deployment,
                    request,
                    body,
                    part_stack,
                    self.tracing,
                    self.metrics,
                )
            except UpstreamStatusError as exc:
                refused = schema_error(exc, schema_param) if schema_param else None
                if refused is not None:
                    raise refused from None
                raise
            if forced is None:
                return opened
            if isinstance(opened, dict):
                request.trace.usage = opened.get("usage")  # counted even if it does not parse
                return forced.answer(opened)
            return forced.stream(opened)

        async def choice(part: dict[str, Any]) -> dict[str, Any] | OpenedStream:
            # Each choice holds its slot only while it is generated: choices waiting for a slot
            # must not wait on siblings that hold theirs until the whole answer is sent.
            part_stack = contextlib.AsyncExitStack()
            stack.push_async_callback(part_stack.aclose)
            answer = await one(part, part_stack)
            if isinstance(answer, dict):
                await part_stack.aclose()
                return answer
            return read_ahead(answer, part_stack.aclose, stack)

        n = fields.pop("n", None) or 1
        if n == 1:
            return await one(fields, stack)
        parts = await gather_all([functools.partial(choice, part) for part in split(fields, n)])
        if request.stream:
            wants_usage = bool((request.fields.get("stream_options") or {}).get("include_usage"))
            return merge_streams([p for p in parts if isinstance(p, OpenedStream)], wants_usage)
        return merge_answers([p for p in parts if isinstance(p, dict)])

    async def _call_remote(
        self, deployment: RemoteDeployment, request: RoutedRequest, stack: contextlib.AsyncExitStack
    ) -> dict[str, Any] | OpenedStream:
        fields = {**request.fields, "model": deployment.model}
        client_wants_usage = bool((fields.get("stream_options") or {}).get("include_usage"))
        if request.stream:
            fields["stream_options"] = {
                **(fields.get("stream_options") or {}),
                "include_usage": True,
            }
        # A transcription goes as OpenAI's multipart form (upstream/speech.py).
        speech = None
        if request.capability == "transcription":
            speech = SpeechCall.of("openai", fields, request.path)
        body = json.dumps(fields).encode() if speech is None else speech.form(deployment.model)
        what = deployment.describe()
        headers = {**deployment.request_headers(), REQUEST_ID_HEADER: request.request_id}
        self.tracing.inject(headers)
        limits = deployment.timeouts
        # aiohttp enforces all three: `read` is the wait for the first byte and any gap after it,
        # `total` the whole answer, streams included.
        timeouts = Timeouts(read=limits.first_token, connect=limits.connect, total=limits.total)
        url = deployment.url + request.path
        if not request.stream:
            answer = await self.upstream.post(url, body, what, headers, timeouts)
            return answer if speech is None else speech.answer(answer)
        assert isinstance(body, bytes)
        stream = await stack.enter_async_context(
            self.upstream.open_stream(url, body, what, headers, timeouts)
        )
        return await OpenedStream.start(stream, hide_usage=not client_wants_usage)

    def _cache_key(self, request: RoutedRequest) -> str | None:
        if self.cache is None or "no-store" in request.cache_control:
            return None
        if not is_deterministic(request.fields):
            return None
        return cache_key(request.route.name, request.path, request.stream, request.fields)

    async def _cached(
        self, key: str, request: RoutedRequest
    ) -> Completion | CompletionStream | None:
        assert self.cache is not None
        try:
            raw = await self.cache.get(key)
        except Exception as exc:  # a cache outage must not fail requests
            log.warning("response cache unavailable: %s", type(exc).__name__)
            return None
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
        except ValueError:
            return None
        trace = request.trace
        trace.cache, trace.deployment = "hit", entry["d"]
        self.metrics.cache.labels("hit").inc()
        if "body" in entry:
            trace.usage = entry["body"].get("usage")
            return Completion(entry["body"], entry["d"], attempts=0, cached=True)
        trace.ttft = time.perf_counter() - trace.started
        return CompletionStream(
            replay(entry["events"].encode()), entry["d"], _nothing, 0, cached=True
        )

    async def _store(self, key: str, value: bytes) -> None:
        assert self.cache is not None
        if len(value) > self.max_entry_bytes:
            return
        try:
            await self.cache.set(key, value)
        except Exception as exc:  # a cache outage must not fail requests
            log.warning("response cache unavailable: %s", type(exc).__name__)

    async def _store_stream(self, key: str, deployment: Deployment, events: bytes) -> None:
        entry = {"d": deployment.name, "events": events.decode("utf-8", "replace")}
        await self._store(key, json.dumps(entry).encode())


async def _nothing() -> None:
    return None


def _leave(deployment: Deployment) -> None:
    deployment.stats.in_flight -= 1


def _local_fields(deployment: LocalDeployment, request: RoutedRequest) -> dict[str, Any]:
    fields = {**deployment.defaults, **request.fields}
    if request.capability in GENERATING:
        _cap_output(deployment, fields)
    return fields


def _schema_field(fields: dict[str, Any]) -> str | None:
    """The field an engine's refusal of a schema or grammar is blamed on, if any was sent."""
    if (fields.get("response_format") or {}).get("type") in ("json_schema", "json_object"):
        return "response_format"
    return next((name for name in ("json_schema", "grammar") if fields.get(name)), None)


def _check_choices(request: RoutedRequest, cap: int) -> None:
    n = request.fields.get("n")
    if isinstance(n, int) and n > cap:
        raise InvalidRequest(
            f"Invalid value for 'n': {n} choices is more than the {cap} one request may ask "
            "for (setting: routing.max_choices).",
            param="n",
        )


def _cap_output(deployment: LocalDeployment, fields: dict[str, Any]) -> None:
    """No request generates more than the model's max_output_tokens: one that asks for more is
    refused, one that sets no limit gets it (else it could hold a slot until the engine's
    timeout)."""
    cap = deployment.max_output_tokens
    for name in ("max_completion_tokens", "max_tokens"):
        asked = fields.get(name)
        if asked is None:
            continue
        if asked > cap:
            raise InvalidRequest(
                f"'{name}' is {asked}, more than the {cap} tokens the model '{deployment.name}' "
                "generates for one request (setting: max_output_tokens).",
                param=name,
            )
        return
    fields["max_tokens"] = cap


def _transient(exc: APIError) -> bool:
    """A failure of the deployment rather than of the request: worth a retry or a fallback."""
    if isinstance(exc, UpstreamStatusError):
        return exc.transient
    return isinstance(exc, UpstreamError)


def _counts_against(exc: APIError) -> bool:
    """Whether a failure says something about the deployment (else it was the request's fault)."""
    return _transient(exc) or isinstance(exc, ServerBusy | ModelTooLarge)


def _falls_back(exc: APIError) -> bool:
    """Whether the next deployment may be tried: not for the client's own mistakes."""
    return _counts_against(exc) or isinstance(exc, UpstreamDisconnected | EngineNotInstalled)


def _with_attempts(exc: APIError, attempts: int) -> APIError:
    exc.headers = {**(exc.headers or {}), "x-hearth-attempts": str(attempts)}
    return exc


def _accepts(deployment: Deployment, inputs: frozenset[str]) -> bool:
    """Whether a deployment takes these inputs. A local engine says what it can; a remote server
    is trusted to know its own model (and answers for itself if it does not)."""
    if isinstance(deployment, RemoteDeployment):
        return True
    return all(getattr(deployment.capabilities, name, False) for name in inputs)


def _described(inputs: frozenset[str]) -> str:
    return " or ".join("images" if name == "vision" else name for name in sorted(inputs))
