"""POST /v1/embeddings: text (or token arrays) to vectors, float or base64, with usage."""

from __future__ import annotations

import base64
import struct
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from hearth.api.gateway import gateway_headers, run_pipeline
from hearth.errors import InvalidRequest, UpstreamError
from hearth.wire.base import parse_request
from hearth.wire.embeddings import EmbeddingRequest
from hearth.wire.outcome import Completion

router = APIRouter()


@router.post("/v1/embeddings", summary="Create embeddings")
async def create_embeddings(request: Request) -> Response:
    payload = parse_request(EmbeddingRequest, await request.body())
    if (payload.model_extra or {}).get("stream"):
        raise InvalidRequest("Embeddings cannot be streamed.", param="stream")
    wanted = payload.encoding_format
    # Engines are always asked for floats: base64 is encoded here, the same for every engine.
    payload.encoding_format = "float"
    outcome = await run_pipeline(request, payload, "/v1/embeddings", capability="embeddings")
    if not isinstance(outcome, Completion):  # never: embeddings are not streamed
        await outcome.aclose()
        raise UpstreamError("the engine streamed an answer that should have been one JSON body")
    body = dict(outcome.body)
    if wanted == "base64":
        body["data"] = [_as_base64(item) for item in body.get("data") or []]
    return JSONResponse(body, headers=gateway_headers(request, outcome))


def encode_base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the vector as little-endian float32, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _as_base64(item: Any) -> Any:
    if isinstance(item, dict) and isinstance(item.get("embedding"), list):
        return {**item, "embedding": encode_base64(item["embedding"])}
    return item
