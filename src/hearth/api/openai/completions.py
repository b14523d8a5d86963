"""POST /v1/completions (the legacy text completions endpoint)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import Field, field_validator

from hearth.api.openai.forward import forward
from hearth.api.openai.protocol import SamplingParams, parse_request

Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplingParams):
    prompt: Prompt
    max_tokens: int | None = Field(None, ge=0)
    echo: bool | None = None
    suffix: str | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    best_of: int | None = Field(None, ge=1, le=1)

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, prompt: Prompt) -> Prompt:
        if isinstance(prompt, list) and not prompt:
            raise ValueError("the prompt list is empty")
        if isinstance(prompt, list) and len(prompt) > 1 and not isinstance(prompt[0], int):
            raise ValueError(
                "only one prompt per request is supported; send one request per prompt"
            )
        return prompt


router = APIRouter()


@router.post("/v1/completions", summary="Create a text completion")
async def create_completion(request: Request) -> Response:
    payload = parse_request(CompletionRequest, await request.body())
    return await forward(request, payload, "/v1/completions", capability="completion")
