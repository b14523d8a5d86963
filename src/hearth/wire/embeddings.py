"""The embeddings request (POST /v1/embeddings); Ollama's /api/embed produces it too."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from hearth.wire.base import ModelRequest

MAX_INPUTS = 2048

EmbeddingInput = str | list[str] | list[int] | list[list[int]]


class EmbeddingRequest(ModelRequest):
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: EmbeddingInput) -> EmbeddingInput:
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one input")
            if len(value) > MAX_INPUTS:
                raise ValueError(f"at most {MAX_INPUTS} inputs are allowed in one request")
            if any(isinstance(item, list) and not item for item in value):
                raise ValueError("a token array must not be empty")
        return value
