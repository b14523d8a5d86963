"""POST /v1/completions (the legacy text completions endpoint)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from hearth.api.gateway import run_pipeline
from hearth.api.openai.respond import respond
from hearth.wire.base import parse_request
from hearth.wire.completions import CompletionRequest

router = APIRouter()


@router.post("/v1/completions", summary="Create a text completion")
async def create_completion(request: Request) -> Response:
    payload = parse_request(CompletionRequest, await request.body())
    answer = await run_pipeline(request, payload, "/v1/completions", capability="completion")
    return respond(answer, request)
