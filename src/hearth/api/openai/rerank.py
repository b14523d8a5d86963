"""POST /v1/rerank (and the aliases llama.cpp, Jina and Cohere clients call): a query and
documents in, documents' indices and relevance scores out, best first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator

from hearth.api.gateway import gateway_headers, run_pipeline
from hearth.errors import UpstreamError
from hearth.wire.base import ModelRequest, OpenAIBaseModel, parse_request
from hearth.wire.outcome import Completion

MAX_DOCUMENTS = 1024
PATHS = ("/v1/rerank", "/rerank", "/v1/reranking", "/reranking", "/v2/rerank")


class DocumentObject(OpenAIBaseModel):
    text: str


class RerankRequest(ModelRequest):
    query: str
    documents: list[str | DocumentObject] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False

    @field_validator("documents")
    @classmethod
    def _as_text(cls, documents: list[str | DocumentObject]) -> list[str | DocumentObject]:
        # Jina and Cohere accept {"text": ...}; engines take plain strings.
        return [d.text if isinstance(d, DocumentObject) else d for d in documents]

    def texts(self) -> list[str]:
        return [d.text if isinstance(d, DocumentObject) else d for d in self.documents]


router = APIRouter()


async def create_rerank(request: Request) -> Response:
    payload = parse_request(RerankRequest, await request.body())
    texts = payload.texts()
    wanted_top_n, return_documents = payload.top_n, payload.return_documents
    # Engines score every document; ordering, top_n and the documents are applied here, so the
    # answer has the same shape whichever engine (or remote) served it.
    payload.top_n = len(texts)
    payload.return_documents = False
    outcome = await run_pipeline(request, payload, "/v1/rerank", capability="rerank")
    if not isinstance(outcome, Completion):
        await outcome.aclose()
        raise UpstreamError("the engine streamed an answer that should have been one JSON body")
    body = dict(outcome.body)
    body["results"] = shape_results(body.get("results"), texts, wanted_top_n, return_documents)
    body.setdefault("object", "list")
    return JSONResponse(body, headers=gateway_headers(request, outcome))


def shape_results(
    results: Any, texts: list[str], top_n: int | None, return_documents: bool
) -> list[dict[str, Any]]:
    """Engine results as [{index, relevance_score[, document]}], best first, top_n of them."""
    if not isinstance(results, list):
        raise UpstreamError("the engine's rerank answer has no 'results' list")
    shaped: list[dict[str, Any]] = []
    for item in results:
        if not isinstance(item, dict) or not isinstance(item.get("index"), int):
            raise UpstreamError("the engine's rerank answer has a result without an 'index'")
        index: int = item["index"]
        score = item.get("relevance_score", item.get("score"))
        if not 0 <= index < len(texts) or not isinstance(score, int | float):
            raise UpstreamError("the engine's rerank answer has an invalid result")
        entry: dict[str, Any] = {"index": index, "relevance_score": float(score)}
        if return_documents:
            entry["document"] = {"text": texts[index]}
        shaped.append(entry)
    shaped.sort(key=lambda entry: -entry["relevance_score"])
    return shaped[:top_n] if top_n is not None else shaped


for _path in PATHS:
    router.add_api_route(
        _path,
        create_rerank,
        methods=["POST"],
        summary="Rerank documents by relevance to a query",
        include_in_schema=_path == "/v1/rerank",
    )
