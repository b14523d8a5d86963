"""An answer in OpenAI's HTTP shape: a JSON body, or server-sent events relayed as they come."""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hearth.api.gateway import gateway_headers
from hearth.api.relay import SSE_HEADERS, RelayResponse
from hearth.errors import ShuttingDown
from hearth.routing.streams import error_event
from hearth.wire.outcome import Completion, CompletionStream


def respond(outcome: Completion | CompletionStream, request: Request | None = None) -> Response:
    """JSON, or server-sent events. Given the request, the gateway's headers (deployment,
    attempts, overhead, cache, rate limits) are added."""
    headers = gateway_headers(request, outcome) if request is not None else {}
    if isinstance(outcome, Completion):
        return JSONResponse(outcome.body, headers=headers)
    return RelayResponse(
        outcome.events,
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **headers},
        # Runs even when the client went away before the first chunk was sent.
        background=BackgroundTask(outcome.aclose),
        trace=None if request is None else request.state.trace,
        cut_event=error_event(ShuttingDown()),
    )
