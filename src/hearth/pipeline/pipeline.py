"""The one request path every protocol shares: admit → route → relay → account.

A protocol translator (OpenAI, Ollama, Anthropic) decodes its request into a `PipelineRequest`
and turns the answer back into its own shape; everything in between happens here, once. Each
step knows only the one below: the router answers (a whole body, or a stream that relays the
engine's events), and the pipeline accounts for it when it has ended, by wrapping the stream it
hands up, so nothing below ever calls back up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from hearth.deployments.catalogue import Catalogue
from hearth.deployments.deployment import Route
from hearth.errors import APIError, ClientDisconnected, ModelNotFound, ShuttingDown
from hearth.pipeline.account import Accountant
from hearth.pipeline.adapter import select_adapter, unknown_adapter_route
from hearth.pipeline.admit import Admission
from hearth.pipeline.request import PipelineRequest
from hearth.routing.request import RoutedRequest
from hearth.routing.router import Router
from hearth.routing.tokens import count_input_tokens, detokenize_on_engine, tokenize_on_engine
from hearth.wire.outcome import Completion, CompletionStream

OK = 200


@dataclass
class Pipeline:
    catalogue: Callable[[], Catalogue]  # read per request: a settings reload swaps it
    admission: Admission
    router: Router
    accountant: Accountant

    async def run(self, request: PipelineRequest) -> Completion | CompletionStream:
        """The answer, whole or streamed; an APIError when there is none. A stream must be
        consumed or closed (its `aclose`), which accounts for it."""
        route, ratelimit = await self._admit(request)
        trace = request.trace
        routed = RoutedRequest(
            route=route,
            path=request.path.removeprefix("/v1"),
            fields=request.fields,
            capability=request.capability,
            request_id=request.request_id,
            trace=trace,
            keep_alive=request.keep_alive,
            priority=request.priority,
            cache_control=request.cache_control,
            inputs=request.inputs,
            headers=request.headers,
            caller=request.caller,
        )
        try:
            answer = await self.router.complete(routed)
        except APIError as exc:
            self.accountant.finished(request, exc.status_code)
            raise
        except asyncio.CancelledError:  # the work was cancelled before the answer started
            # The edge notes a client hang-up in the trace; otherwise Hearth is stopping.
            self.accountant.finished(request, trace.status or ShuttingDown.status_code)
            raise
        answer.headers.update(ratelimit)
        if isinstance(answer, Completion):
            self.accountant.finished(request, OK)
            return answer
        answer.events = self._accounted(answer.events, request)
        return answer

    async def load(self, request: PipelineRequest) -> str:
        """Load the model (or unload it, with keep_alive 0) as Ollama's empty prompt asks:
        admitted and accounted like any request. Returns "load" or "unload"."""
        route, _ = await self._admit(request)
        scheduler = self.router.scheduler
        action = "load"
        deployment = route.local
        if deployment is not None:  # a remote deployment loads its models itself
            if request.keep_alive == 0:
                await scheduler.unload(deployment.name)
                action = "unload"
            else:
                loaded = await scheduler.make_room_and_load(deployment)
                await loaded.supervisor.endpoint()  # waits until it is ready
                if request.keep_alive is not None:
                    scheduler.load(deployment, keep_alive=request.keep_alive)  # sets it
        self.accountant.finished(request, OK)
        return action

    async def count_tokens(self, request: PipelineRequest) -> int:
        """The input tokens of a chat request (its messages and tools), admitted like any
        request: a key counts only on the models it may use."""
        route, _ = await self._admit(request)
        return await count_input_tokens(
            self.router.scheduler, self.router.upstream, route, request.fields, request.request_id
        )

    async def tokenize(self, request: PipelineRequest) -> dict[str, Any]:
        """Token ids of a text or a conversation by the model's engine, admitted like any
        request: {"tokens", "max_model_len"}."""
        route, _ = await self._admit(request)
        return await tokenize_on_engine(
            self.router.scheduler, self.router.upstream, route, request.fields, request.request_id
        )

    async def detokenize(self, request: PipelineRequest) -> str:
        """The text of `tokens` by the model's engine, admitted like any request."""
        route, _ = await self._admit(request)
        tokens = request.fields.get("tokens") or []
        return await detokenize_on_engine(
            self.router.scheduler, self.router.upstream, route, tokens, request.request_id
        )

    async def _admit(self, request: PipelineRequest) -> tuple[Route, dict[str, str]]:
        """The request's route and its caller's x-ratelimit-* headers, once the caller is let
        in. An unknown name offers only the names the caller may know of."""
        caller = request.caller
        catalogue = self.catalogue()
        try:
            route = catalogue.resolve(request.model)
        except ModelNotFound:
            allows = None if caller is None else caller.allows_model
            raise unknown_adapter_route(request.model, catalogue.names_visible(allows)) from None
        request.trace.model = route.name
        if route.preset is not None:
            request.fields = route.preset.apply(request.fields, request.capability)
        request.fields = select_adapter(route, request.fields, request.capability)
        ratelimit = await self.admission.admit(caller, request.model, route.name)
        return route, ratelimit

    async def _accounted(
        self, events: AsyncGenerator[bytes, None], request: PipelineRequest
    ) -> AsyncGenerator[bytes, None]:
        """The stream's events, accounted for once the relay beneath has ended (complete,
        failed with an error event, or left by the client)."""
        trace = request.trace
        try:
            async with aclosing(events):
                async for event in events:
                    yield event
        except asyncio.CancelledError:
            # The edge marks a client's hang-up before it cancels; otherwise Hearth is stopping.
            trace.status = trace.status or ShuttingDown.status_code
            raise
        except GeneratorExit:  # closed before its end: its reader went away
            trace.status = trace.status or ClientDisconnected.status_code
            raise
        finally:
            self.accountant.finished(request, trace.status or OK)
