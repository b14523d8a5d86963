"""The legacy text completion request (POST /v1/completions); Ollama's raw generate produces it
too."""

from __future__ import annotations

from pydantic import Field, field_validator

from hearth.wire.base import SamplingParams

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
