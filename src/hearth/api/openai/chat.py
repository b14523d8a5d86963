"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from hearth.api.gateway import run_pipeline
from hearth.api.openai.respond import respond
from hearth.wire.base import parse_request
from hearth.wire.chat import ChatCompletionRequest

router = APIRouter()


@router.post("/v1/chat/completions", summary="Create a chat completion")
async def create_chat_completion(request: Request) -> Response:
    payload = parse_request(ChatCompletionRequest, await request.body())
    answer = await run_pipeline(request, payload, "/v1/chat/completions", capability="chat")
    return respond(answer, request)
