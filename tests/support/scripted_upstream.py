"""An OpenAI-compatible upstream for gateway tests, whose behaviour the test scripts.

It runs in a thread (uvicorn + Starlette) so a real Hearth subprocess can reach it while the test
waits on Hearth. Every first path segment is a separate deployment: `url("a")` is
`http://127.0.0.1:<port>/a/v1`. Each request to a deployment takes the next behaviour from its
script, or its default ("ok") when the script is empty:

    ok                     a chat answer "<name> says hi" (streamed: three content chunks, a
                           usage chunk when asked for, [DONE])
    status:N[:retry=S]     HTTP N with an OpenAI error body (and Retry-After: S)
    hang                   never answers (until the client leaves)
    slow:S                 waits S seconds, then answers like ok
    drop                   streams two chunks, then breaks the connection
    stall                  streams one chunk, then nothing until the client leaves (counted in
                           `abandoned`)
    nousage                like ok, but never sends usage, even when asked
    tools                  a tool call to get_weather({"city": "Paris"}), streamed in argument
                           fragments as real upstreams send them
    reasoning              like ok, with `reasoning_content` "<name> thinks" first (streamed:
                           two reasoning deltas, then the content chunks)
    say:TEXT               a whole answer with content TEXT (and log-probabilities of -0.1 a
                           word when asked for); not streamed
    unsure:TEXT            like say, with log-probabilities of -4 a word
    cut:TEXT               like say, but cut off by max_tokens (finish_reason "length")
    call:ARGS              a whole answer calling get_weather with the raw arguments ARGS

`POST /{name}/v1/audio/transcriptions` (and /translations) take OpenAI's multipart form and
record its fields, with the uploaded WAV's shape under "file", in `received`; `ok` answers the
form's response_format (json, or verbose_json with a segment a second and the `words` asked
for) with usage in seconds, `nousage` without usage; status, hang and slow work as above.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import threading
import time
import wave
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from support.ports import free_port

TOOL_ARGUMENT_FRAGMENTS = ['{"ci', 'ty": "Pa', 'ris"}']


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]


class ScriptedUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self._scripts: dict[str, deque[str]] = defaultdict(deque)
        self._defaults: dict[str, str] = {}
        self.received: dict[str, list[Received]] = defaultdict(list)
        self.models_probes: dict[str, int] = defaultdict(int)
        self.abandoned: dict[str, int] = defaultdict(int)  # streams the client left mid-way
        self.model_ids: dict[str, list[str]] = {}  # what GET /models lists (default m1, m2)
        app = Starlette(
            routes=[
                Route("/{name}/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/{name}/v1/models", self._models, methods=["GET"]),
                Route("/{name}/v1/audio/{task}", self._speech, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/v1"

    def script(self, name: str, *behaviours: str) -> None:
        self._scripts[name].extend(behaviours)

    def set_default(self, name: str, behaviour: str) -> None:
        self._defaults[name] = behaviour

    def hits(self, name: str) -> int:
        return len(self.received[name])

    def start(self) -> ScriptedUpstream:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the scripted upstream did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def _next(self, name: str) -> str:
        script = self._scripts[name]
        return script.popleft() if script else self._defaults.get(name, "ok")

    async def _models(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.models_probes[name] += 1
        behaviour = self._defaults.get(name, "ok")
        if behaviour.startswith("status:"):
            return _error(int(behaviour.split(":")[1]))
        ids = self.model_ids.get(name, ["m1", "m2"])
        return JSONResponse({"object": "list", "data": [{"id": model} for model in ids]})

    async def _chat(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.json()
        self.received[name].append(Received(body, dict(request.headers)))
        behaviour = self._next(name)
        kind, _, arg = behaviour.partition(":")
        if kind == "status":
            status, _, retry = arg.partition(":retry=")
            return _error(int(status), retry or None)
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "slow":
            await asyncio.sleep(float(arg))
        if kind in ("say", "unsure", "cut", "call"):
            return JSONResponse(_scripted_answer(name, kind, arg, bool(body.get("logprobs"))))
        stream = bool(body.get("stream"))
        usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
        if kind == "tools":
            if stream:
                return _sse(_tool_call_chunks(name))
            return JSONResponse(_tool_call_answer(name))
        if kind == "reasoning":
            if stream:
                return _sse(_reasoning_chunks(name, usage_wanted))
            return JSONResponse(_reasoning_answer(name))
        if stream and kind == "stall":
            return _sse(self._stalled(name))
        if stream:
            usage_wanted = usage_wanted and kind != "nousage"
            return _sse(_chunks(name, usage_wanted, drop=kind == "drop"))
        return JSONResponse(_answer(name))

    async def _speech(self, request: Request) -> Response:
        name = request.path_params["name"]
        async with request.form() as form:
            body = await _read_speech_form(request.path_params["task"], form)
        self.received[name].append(Received(body, dict(request.headers)))
        kind, _, arg = self._next(name).partition(":")
        if kind == "status":
            status, _, retry = arg.partition(":retry=")
            return _error(int(status), retry or None)
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "slow":
            await asyncio.sleep(float(arg))
        return JSONResponse(_speech_answer(name, body, usage=kind != "nousage"))

    async def _stalled(self, name: str) -> AsyncIterator[bytes]:
        yield _chunk(name, {"role": "assistant", "content": name})
        try:
            await asyncio.sleep(3600)
        finally:  # Starlette cancels the stream when the client disconnects
            self.abandoned[name] += 1
        yield b"data: [DONE]\n\n"


async def _read_speech_form(task: str, form: FormData) -> dict[str, Any]:
    body: dict[str, Any] = {"task": task}
    for key, value in form.multi_items():
        if isinstance(value, str):
            if key.endswith("[]"):
                body.setdefault(key, []).append(value)
            else:
                body[key] = value
            continue
        data = await value.read()
        with wave.open(io.BytesIO(data), "rb") as source:
            shape = (source.getnchannels(), source.getframerate(), source.getnframes())
        body[key] = {
            "filename": value.filename,
            "content_type": value.content_type,
            "channels": shape[0],
            "rate": shape[1],
            "seconds": shape[2] / shape[1],
        }
    return body


def _speech_answer(name: str, form: dict[str, Any], usage: bool) -> dict[str, Any]:
    seconds = form["file"]["seconds"]
    count = max(1, math.ceil(seconds))
    spans = [(float(i), min(seconds, i + 1.0)) for i in range(count)]
    answer: dict[str, Any] = {"text": " ".join(f"{name} heard {i + 1}." for i in range(count))}
    if form.get("response_format") == "verbose_json":
        answer = {"task": form["task"][:-1], "language": "english", "duration": seconds, **answer}
        answer["segments"] = [
            {"id": i, "seek": 0, "start": start, "end": end, "text": f" {name} heard {i + 1}.",
             "tokens": [50364, 400 + i], "temperature": 0.0, "avg_logprob": -0.2,
             "compression_ratio": 1.1, "no_speech_prob": 0.01}
            for i, (start, end) in enumerate(spans)
        ]  # fmt: skip
        if "word" in form.get("timestamp_granularities[]", []):
            answer["words"] = [
                {"word": word, "start": start + j * (end - start) / 3,
                 "end": start + (j + 1) * (end - start) / 3}
                for i, (start, end) in enumerate(spans)
                for j, word in enumerate((name, "heard", f"{i + 1}."))
            ]  # fmt: skip
    if usage:
        answer["usage"] = {"type": "duration", "seconds": math.ceil(seconds)}
    return answer


def _error(status: int, retry_after: str | None = None) -> Response:
    body = {"error": {"message": f"scripted failure {status}", "type": "server_error"}}
    headers = {"retry-after": retry_after} if retry_after else None
    return JSONResponse(body, status_code=status, headers=headers)


USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def _answer(name: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": f"{name}-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"{name} says hi"},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }


def _scripted_answer(name: str, kind: str, arg: str, logprobs: bool) -> dict[str, Any]:
    answer = _answer(name)
    choice = answer["choices"][0]
    if kind == "call":
        function = {"name": "get_weather", "arguments": arg}
        call: dict[str, Any] = {"id": "call_1", "type": "function", "function": function}
        choice["message"] = {"role": "assistant", "content": None, "tool_calls": [call]}
        choice["finish_reason"] = "tool_calls"
        return answer
    choice["message"]["content"] = arg
    choice["finish_reason"] = "length" if kind == "cut" else "stop"
    if logprobs:
        value = -4.0 if kind == "unsure" else -0.1
        words = arg.split() or [""]
        choice["logprobs"] = {
            "content": [{"token": w, "logprob": value, "top_logprobs": []} for w in words]
        }
    return answer


def _chunk(name: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": f"{name}-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def _chunks(name: str, usage_wanted: bool, drop: bool) -> AsyncIterator[bytes]:
    yield _chunk(name, {"role": "assistant", "content": name})
    yield _chunk(name, {"content": " says"})
    if drop:
        await asyncio.sleep(0.05)
        raise ConnectionAbortedError("scripted drop")  # uvicorn cuts the connection
    yield _chunk(name, {"content": " hi"}, finish="stop")
    if usage_wanted:
        usage = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": USAGE,
        }
        yield b"data: " + json.dumps(usage).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def _tool_call_answer(name: str) -> dict[str, Any]:
    answer = _answer(name)
    answer["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "".join(TOOL_ARGUMENT_FRAGMENTS)},
            }
        ],
    }
    answer["choices"][0]["finish_reason"] = "tool_calls"
    return answer


async def _tool_call_chunks(name: str) -> AsyncIterator[bytes]:
    first = {
        "role": "assistant",
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
    }
    yield _chunk(name, first)
    for fragment in TOOL_ARGUMENT_FRAGMENTS:
        yield _chunk(name, {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
    yield _chunk(name, {}, finish="tool_calls")
    yield b"data: [DONE]\n\n"


def _sse(chunks: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream")


REASONING_FRAGMENTS = [" thinks", " hard"]


def _reasoning_answer(name: str) -> dict[str, Any]:
    answer = _answer(name)
    answer["choices"][0]["message"]["reasoning_content"] = name + "".join(REASONING_FRAGMENTS)
    return answer


async def _reasoning_chunks(name: str, usage_wanted: bool) -> AsyncIterator[bytes]:
    yield _chunk(name, {"role": "assistant", "content": None, "reasoning_content": name})
    for fragment in REASONING_FRAGMENTS:
        yield _chunk(name, {"reasoning_content": fragment})
    async for chunk in _chunks(name, usage_wanted, drop=False):
        yield chunk
