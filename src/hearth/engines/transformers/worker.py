"""Hearth's transformers worker: one Hugging Face model folder behind a small OpenAI-speaking
HTTP server, started and supervised by Hearth like any other engine.

    python -m hearth.engines.transformers.worker --model DIR --port P [--task TASK]

Embeddings and reranking go through sentence-transformers (a cross-encoder folder scores pairs;
an embedding model reranks by cosine similarity), chat and completions through transformers with
the tokenizer's chat template, streamed with TextIteratorStreamer (an image-text-to-text folder
through its processor, images given as data: URLs); a Whisper folder transcribes
and translates (JSON with the audio as base64 16 kHz WAV, answered as OpenAI's verbose_json).
The model loads before the port opens, so `/health` answering 200 means ready. One request runs
on the model at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from hearth.engines.transformers.backends import (
    ChatBackend,
    EmbeddingBackend,
    Generation,
    RerankBackend,
    WorkerError,
    pick_device,
)
from hearth.engines.transformers.folder import Task, inspect_folder
from hearth.engines.transformers.speech import SpeechBackend
from hearth.engines.transformers.vision import VisionChatBackend

# What a worker process serves: one model, by its task (a vision model is a ChatBackend).
Backend = EmbeddingBackend | RerankBackend | ChatBackend | SpeechBackend

log = logging.getLogger("hearth.worker")


def create_app(backend: Backend, name: str) -> FastAPI:
    """The worker's ASGI app over a loaded backend."""
    app = FastAPI(title="hearth transformers worker", docs_url=None, redoc_url=None)
    lock = threading.Lock()  # one request on the model at a time

    def run_locked(fn: Any, *args: Any) -> Any:
        with lock:
            return fn(*args)

    @app.exception_handler(WorkerError)
    async def _error(_: Request, exc: WorkerError) -> Response:
        body = {"error": {"message": exc.message, "type": "invalid_request_error",
                          "param": exc.param, "code": None}}  # fmt: skip
        return JSONResponse(body, status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry = {"id": name, "object": "model", "created": 0, "owned_by": "hearth"}
        return {"object": "list", "data": [entry]}

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise WorkerError("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise WorkerError("the request body must be a JSON object")
        return body

    def wrong(what: str) -> WorkerError:
        return WorkerError(f"this worker serves {backend.task}, not {what}", param="model")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        body = await body_of(request)
        if not isinstance(backend, EmbeddingBackend):
            raise wrong("embeddings")
        model = backend
        vectors, tokens = await asyncio.to_thread(
            run_locked, model.embed, body.get("input"), body.get("dimensions")
        )
        data = [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(vectors)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": name, "usage": usage}

    async def rerank(request: Request) -> dict[str, Any]:
        body = await body_of(request)
        if not isinstance(backend, RerankBackend):
            raise wrong("rerank")
        model = backend
        query, documents = body.get("query"), body.get("documents")
        if not isinstance(query, str):
            raise WorkerError("'query' must be a string", param="query")
        if not isinstance(documents, list) or not documents:
            raise WorkerError("'documents' must be a non-empty list", param="documents")
        texts = [d.get("text") if isinstance(d, dict) else d for d in documents]
        if not all(isinstance(t, str) for t in texts):
            raise WorkerError("each document must be a string", param="documents")
        scores, tokens = await asyncio.to_thread(run_locked, model.score, query, texts)
        results = [{"index": i, "relevance_score": s} for i, s in enumerate(scores)]
        results.sort(key=lambda r: -float(r["relevance_score"]))
        top_n = body.get("top_n")
        if isinstance(top_n, int) and top_n > 0:
            results = results[:top_n]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "model": name, "results": results, "usage": usage}

    for path in ("/v1/rerank", "/rerank", "/v1/reranking"):
        app.add_api_route(path, rerank, methods=["POST"])

    async def speech(request: Request, translate: bool) -> dict[str, Any]:
        body = await body_of(request)
        if not isinstance(backend, SpeechBackend):
            raise wrong("transcription")
        model = backend
        answer: dict[str, Any] = await asyncio.to_thread(
            run_locked, model.transcribe, body, translate
        )
        return answer

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> dict[str, Any]:
        return await speech(request, translate=False)

    @app.post("/v1/audio/translations")
    async def translations(request: Request) -> dict[str, Any]:
        return await speech(request, translate=True)

    async def generate(request: Request, chat: bool) -> Response:
        body = await body_of(request)
        if not isinstance(backend, ChatBackend):
            raise wrong("chat and completions")
        model = backend
        # Off the event loop: an image request decodes and preprocesses its pictures here.
        generation = await asyncio.to_thread(model.prepare, body, chat)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _stream_events(model, generation, name, chat, include_usage, lock)
            return StreamingResponse(events, media_type="text/event-stream")
        text, finish, completion_tokens = await asyncio.to_thread(
            run_locked, model.complete, generation
        )
        return JSONResponse(
            _answer(name, chat, text, finish, generation.prompt_tokens, completion_tokens)
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, chat=False)

    return app


def _answer(
    name: str, chat: bool, text: str, finish: str, prompt: int, completion: int
) -> dict[str, Any]:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
        }
        kind, prefix = "chat.completion", "chatcmpl"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        kind, prefix = "text_completion", "cmpl"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": name,
        "choices": [choice],
        "usage": usage,
    }


async def _stream_events(
    model: ChatBackend,
    generation: Generation,
    name: str,
    chat: bool,
    include_usage: bool,
    lock: threading.Lock,
) -> AsyncIterator[bytes]:
    """OpenAI server-sent events from a generation running in a thread."""
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(delta: str | None, finish: str | None, first: bool = False) -> bytes:
        if chat:
            content: dict[str, Any] = {} if delta is None else {"content": delta}
            if first:
                content["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": content, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        chunk = {"id": ident, "object": kind, "created": created, "model": name,
                 "choices": [choice]}  # fmt: skip
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    cancelled = threading.Event()

    def produce() -> None:
        with lock:
            try:
                pieces: Iterator[str] = model.stream(generation, cancelled)
                for piece in pieces:
                    loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
            except Exception as exc:  # reported in the stream, not lost in a thread
                loop.call_soon_threadsafe(queue.put_nowait, ("error", str(exc)))

    thread = threading.Thread(target=produce, name="generate", daemon=True)
    thread.start()
    try:
        if chat:
            yield event(None, None, first=True)
        while True:
            what, value = await queue.get()
            if what == "piece":
                if value:
                    yield event(value, None)
                continue
            if what == "error":
                error = {"error": {"message": value, "type": "server_error"}}
                yield b"data: " + json.dumps(error).encode() + b"\n\n"
                break
            yield event(None if chat else "", generation.finish_reason)
            if include_usage:
                usage = {
                    "prompt_tokens": generation.prompt_tokens,
                    "completion_tokens": generation.completion_tokens,
                    "total_tokens": generation.prompt_tokens + generation.completion_tokens,
                }
                chunk = {"id": ident, "object": kind, "created": created, "model": name,
                         "choices": [], "usage": usage}  # fmt: skip
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            break
        yield b"data: [DONE]\n\n"
    finally:
        cancelled.set()  # a client that hung up stops the generation


def load_backend(
    path: Path, task: Task | None, device: str | None, dtype: str | None, threads: int | None
) -> Backend:
    """The backend for the folder's task (or the one asked for), loaded on the device."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    info = inspect_folder(path)
    task = task or info.task
    chosen = pick_device(device)
    if task == "embeddings":
        return EmbeddingBackend(path, chosen)
    if task == "rerank":
        return RerankBackend(path, chosen, info.is_cross_encoder)
    if task == "transcription":
        return SpeechBackend(path, chosen, dtype)
    if info.vision:
        return VisionChatBackend(path, chosen, dtype)
    return ChatBackend(path, chosen, dtype)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hearth.engines.transformers.worker")
    parser.add_argument("--model", required=True, type=Path, help="Hugging Face model folder")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--task", choices=["chat", "embeddings", "rerank", "transcription"], default=None
    )
    parser.add_argument("--name", default=None, help="model name in answers")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps; default: best")
    parser.add_argument("--dtype", default=None, help="float32, float16, bfloat16; default: auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.monotonic()
    backend = load_backend(args.model, args.task, args.device, args.dtype, args.threads)
    log.info(
        "loaded %s for %s on %s in %.1fs",
        args.model,
        backend.task,
        backend.device,
        time.monotonic() - started,
    )
    import uvicorn

    app = create_app(backend, args.name or args.model.name)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
