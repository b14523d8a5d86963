"""POST /api/chat, /api/generate, /api/embed and /api/embeddings: Ollama's generation endpoints,
answered by routing an equivalent OpenAI request like any other."""

from __future__ import annotations

import json
import time
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from hearth.api.gateway import gateway_headers, load_model, run_pipeline
from hearth.api.ollama import names
from hearth.api.ollama.protocol import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    keep_alive_seconds,
)
from hearth.api.ollama.reply import (
    NDJSON,
    Timer,
    chat_reply,
    generate_reply,
    line,
    now_iso,
    stream_lines,
)
from hearth.api.ollama.translate import chat_body, generate_body
from hearth.api.relay import RelayResponse
from hearth.api.scope import visible_names
from hearth.api.services import services_of
from hearth.errors import InvalidRequest, ShuttingDown
from hearth.wire.base import ModelRequest, SamplingParams, parse_request
from hearth.wire.chat import ChatCompletionRequest
from hearth.wire.completions import CompletionRequest
from hearth.wire.embeddings import EmbeddingRequest
from hearth.wire.outcome import Completion

router = APIRouter(tags=["ollama"])
RequestT = TypeVar("RequestT", bound=SamplingParams)


def catalogue_name(request: Request, name: str) -> str:
    """The catalogue's name for an Ollama model name (see `names`); 404 if there is none, or
    if the caller may not know of it (offering only the names it may)."""
    catalogue = services_of(request).catalogue
    available = visible_names(request, catalogue)
    return names.resolve(name, set(available).__contains__, available)


@router.post("/api/chat", summary="Ollama: chat, streamed as NDJSON unless stream is false")
async def chat(request: Request) -> Response:
    ollama = parse_request(ChatRequest, await request.body())
    model = catalogue_name(request, ollama.model)
    if not ollama.messages:
        return await _load_or_unload(request, ollama.model, model, ollama.keep_alive, chat=True)
    payload = _openai(ChatCompletionRequest, chat_body(ollama, model))
    return await _answer(request, payload, "/v1/chat/completions", "chat", ollama.model, chat=True)


@router.post("/api/generate", summary="Ollama: generate from a prompt, streamed as NDJSON")
async def generate(request: Request) -> Response:
    ollama = parse_request(GenerateRequest, await request.body())
    model = catalogue_name(request, ollama.model)
    if not ollama.prompt and not ollama.images:
        return await _load_or_unload(request, ollama.model, model, ollama.keep_alive, chat=False)
    path, capability, body = generate_body(ollama, model)
    payload: SamplingParams
    if path == "/v1/completions":
        payload = _openai(CompletionRequest, body)
    else:
        payload = _openai(ChatCompletionRequest, body)
    return await _answer(request, payload, path, capability, ollama.model, chat=False)


@router.post("/api/embed", summary="Ollama: embeddings of one input or several")
@router.post("/api/embeddings", summary="Ollama: embeddings, the older endpoint (one prompt)")
async def embed(request: Request) -> Response:
    ollama = parse_request(EmbedRequest, await request.body())
    legacy = request.url.path == "/api/embeddings"
    texts = ollama.prompt if legacy else ollama.input
    if texts is None or texts == [] or (legacy and not isinstance(texts, str)):
        field = "prompt" if legacy else "input"
        raise InvalidRequest(f"'{field}' is required: the text to embed.", param=field)
    fields: dict[str, Any] = {"model": catalogue_name(request, ollama.model), "input": texts}
    if ollama.keep_alive is not None:
        fields["keep_alive"] = keep_alive_seconds(ollama.keep_alive)
    if ollama.dimensions is not None:
        fields["dimensions"] = ollama.dimensions
    payload = parse_request(EmbeddingRequest, json.dumps(fields).encode())
    outcome = await run_pipeline(request, payload, "/v1/embeddings", capability="embeddings")
    assert isinstance(outcome, Completion)  # embeddings are never streamed
    vectors = [item["embedding"] for item in sorted(outcome.body["data"], key=_index)]
    headers = gateway_headers(request, outcome)
    if legacy:
        return JSONResponse({"embedding": vectors[0]}, headers=headers)
    usage = outcome.body.get("usage") or {}
    body = {
        "model": ollama.model,
        "embeddings": vectors,
        "total_duration": round((time.perf_counter() - request.state.started) * 1e9),
        "prompt_eval_count": usage.get("prompt_tokens", 0),
    }
    return JSONResponse(body, headers=headers)


def _index(item: dict[str, Any]) -> int:
    return int(item.get("index", 0))


def _openai(model_cls: type[RequestT], body: dict[str, Any]) -> RequestT:
    """The translated request, validated as if a client had sent it to the OpenAI endpoint."""
    return parse_request(model_cls, json.dumps(body).encode())


async def _answer(
    request: Request, payload: SamplingParams, path: str, capability: str, model: str, *, chat: bool
) -> Response:
    timer = Timer(started=request.state.started)
    outcome = await run_pipeline(request, payload, path, capability=capability)
    headers = gateway_headers(request, outcome)
    if isinstance(outcome, Completion):
        reply = chat_reply if chat else generate_reply
        return JSONResponse(reply(outcome.body, model, timer), headers=headers)
    return RelayResponse(
        stream_lines(outcome, model, timer, chat=chat),
        media_type=NDJSON,
        headers=headers,
        background=BackgroundTask(outcome.aclose),
        trace=request.state.trace,
        cut_event=line({"error": ShuttingDown().message}),
    )


async def _load_or_unload(
    request: Request, asked: str, model: str, keep_alive: str | float | None, *, chat: bool
) -> Response:
    """An empty prompt (or no messages) loads the model, or unloads it with keep_alive 0:
    admitted (scope, limits) and accounted like any request to the model."""
    fields: dict[str, Any] = {"model": model}
    if keep_alive is not None:
        fields["keep_alive"] = keep_alive_seconds(keep_alive)
    reason = await load_model(request, ModelRequest.model_validate(fields))
    reply: dict[str, Any] = {"model": asked, "created_at": now_iso()}
    if chat:
        reply["message"] = {"role": "assistant", "content": ""}
    else:
        reply["response"] = ""
    return JSONResponse({**reply, "done": True, "done_reason": reason})
