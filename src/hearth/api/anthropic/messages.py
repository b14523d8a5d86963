"""POST /v1/messages and POST /v1/messages/count_tokens, answered by routing the equivalent
OpenAI chat request like any other."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from hearth.api import gateway
from hearth.api.anthropic.protocol import CountTokensRequest, MessagesRequest, error_body
from hearth.api.anthropic.stream import message_events
from hearth.api.anthropic.translate import chat_body, conversation, message_reply
from hearth.api.gateway import gateway_headers, run_pipeline
from hearth.api.relay import SSE_HEADERS, RelayResponse
from hearth.api.scope import resolve_visible
from hearth.api.services import services_of
from hearth.errors import ShuttingDown
from hearth.wire.base import parse_request
from hearth.wire.chat import ChatCompletionRequest
from hearth.wire.outcome import Completion

router = APIRouter(tags=["anthropic"])


@router.post("/v1/messages", summary="Anthropic Messages API: create a message")
async def create_message(request: Request) -> Response:
    anthropic = parse_request(MessagesRequest, await request.body())
    anthropic.check_supported()
    resolve_visible(request, services_of(request).catalogue, anthropic.model)  # 404 first
    payload = parse_request(
        ChatCompletionRequest, json.dumps(chat_body(anthropic, anthropic.model)).encode()
    )
    outcome = await run_pipeline(request, payload, "/v1/chat/completions", capability="chat")
    headers = gateway_headers(request, outcome)
    if isinstance(outcome, Completion):
        reply = message_reply(outcome.body, anthropic.model, anthropic)
        return JSONResponse(reply, headers=headers)
    return RelayResponse(
        message_events(outcome, anthropic.model, anthropic),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **headers},
        background=BackgroundTask(outcome.aclose),
        trace=request.state.trace,
        cut_event=_cut_event(),
    )


def _cut_event() -> bytes:
    """Anthropic's error event for a stream that Hearth's shutdown cut short."""
    cut = ShuttingDown()
    body = json.dumps(error_body(cut.status_code, cut.to_body()))
    return f"event: error\ndata: {body}\n\n".encode()


@router.post("/v1/messages/count_tokens", summary="Anthropic Messages API: count input tokens")
async def count_tokens(request: Request) -> dict[str, int]:
    anthropic = parse_request(CountTokensRequest, await request.body())
    resolve_visible(request, services_of(request).catalogue, anthropic.model)
    chat = {"model": anthropic.model, **conversation(anthropic)}
    # The same checks as a reply, and the same admission: a key counts only on its own models.
    payload = parse_request(ChatCompletionRequest, json.dumps(chat).encode())
    return {"input_tokens": await gateway.count_tokens(request, payload)}
