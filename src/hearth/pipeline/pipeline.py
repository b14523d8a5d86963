"""The one request path every protocol shares: admit → route → relay → account.

A protocol translator (OpenAI, Ollama, Anthropic) decodes its request into a `PipelineRequest`
and turns the answer back into its own shape; everything in between happens here, once. Each
step knows only the one below: the router answers (a whole body, or a stream that relays the
engine's events), and the pipeline accounts for it when it has ended, by wrapping the stream it
hands up, so nothing below ever calls back up."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from hearth.deployments.catalogue import Catalogue
from hearth.errors import APIError
from hearth.pipeline.account import Accountant
from hearth.pipeline.admit import Admission
from hearth.pipeline.request import PipelineRequest
from hearth.routing.request import RoutedRequest
from hearth.routing.router import Router
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
        route = self.catalogue().resolve(request.model)
        trace = request.trace
        trace.model = route.name
        ratelimit = await self.admission.admit(request.caller, request.model, route.name)
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
        )
        try:
            answer = await self.router.complete(routed)
        except APIError as exc:
            self.accountant.finished(request, exc.status_code)
            raise
        answer.headers.update(ratelimit)
        if isinstance(answer, Completion):
            self.accountant.finished(request, OK)
            return answer
        answer.events = self._accounted(answer.events, request)
        return answer

    async def _accounted(
        self, events: AsyncGenerator[bytes, None], request: PipelineRequest
    ) -> AsyncGenerator[bytes, None]:
        """The stream's events, accounted for once the relay beneath has ended (complete,
        failed with an error event, or left by the client)."""
        try:
            async with aclosing(events):
                async for event in events:
                    yield event
        finally:
            self.accountant.finished(request, OK)
