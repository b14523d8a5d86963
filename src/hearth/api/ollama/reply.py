"""OpenAI answers as Ollama ones: a whole JSON object, or NDJSON lines ending with a `done` line
that carries the timing fields (nanoseconds) and token counts.

Timings come from the engine when it reports them (llama.cpp's `timings`: prompt and generation
milliseconds); otherwise from Hearth's clock (time to first output for the prompt, the rest for
generation). `total_duration` is Hearth's wall clock from the request's arrival, and
`load_duration` what remains of it besides prompt and generation: loading the model, waiting
for a slot, and Hearth's own overhead.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hearth.wire.chunks import StreamFailed, close_events, openai_chunks
from hearth.wire.outcome import CompletionStream

NDJSON = "application/x-ndjson"
NS = 1_000_000_000

# OpenAI finish_reason → Ollama done_reason.
_DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop"}


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Timer:
    """What one answer took, from the request's arrival (`started`, a perf_counter value)."""

    started: float
    first_output: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)  # llama.cpp's `timings`

    def saw(self, chunk: dict[str, Any]) -> None:
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            self.engine = chunk["timings"]

    def output(self) -> None:
        if self.first_output is None:
            self.first_output = time.perf_counter()

    def fields(self) -> dict[str, int]:
        ended = time.perf_counter()
        total = ended - self.started
        prompt_ms, predicted_ms = self.engine.get("prompt_ms"), self.engine.get("predicted_ms")
        if isinstance(prompt_ms, int | float) and isinstance(predicted_ms, int | float):
            prompt_eval, generation = prompt_ms / 1000, predicted_ms / 1000
        elif self.first_output is not None:
            prompt_eval, generation = self.first_output - self.started, ended - self.first_output
        else:
            prompt_eval, generation = 0.0, total
        load = max(0.0, total - prompt_eval - generation)
        return {
            "total_duration": round(total * NS),
            "load_duration": round(load * NS),
            "prompt_eval_count": _count(self.usage.get("prompt_tokens"), self.engine, "prompt_n"),
            "prompt_eval_duration": round(prompt_eval * NS),
            "eval_count": _count(self.usage.get("completion_tokens"), self.engine, "predicted_n"),
            "eval_duration": round(generation * NS),
        }


def _count(value: object, engine: dict[str, Any], key: str) -> int:
    if isinstance(value, int):
        return value
    fallback = engine.get(key)
    return fallback if isinstance(fallback, int) else 0


def done_reason(finish_reason: object) -> str:
    return _DONE_REASONS.get(str(finish_reason), "stop")


def tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments as a JSON string) as Ollama's (arguments as an object)."""
    out = []
    for call in calls:
        function = call.get("function") or {}
        out.append(
            {"function": {"name": function.get("name", ""), "arguments": _arguments(function)}}
        )
    return out


def _arguments(function: dict[str, Any]) -> dict[str, Any]:
    raw = function.get("arguments") or "{}"
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {"arguments": raw}  # not JSON: kept whole rather than lost
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def logprobs(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """OpenAI chat logprobs (`choice.logprobs.content`) as Ollama's list."""
    entries = (choice.get("logprobs") or {}).get("content")
    if not isinstance(entries, list):
        return None
    return [
        {
            "token": entry.get("token", ""),
            "logprob": entry.get("logprob", 0.0),
            "top_logprobs": [
                {"token": top.get("token", ""), "logprob": top.get("logprob", 0.0)}
                for top in entry.get("top_logprobs") or []
            ],
        }
        for entry in entries
    ]


def chat_reply(body: dict[str, Any], model: str, timer: Timer) -> dict[str, Any]:
    """A non-streamed chat completion as an `/api/chat` answer."""
    timer.saw(body)
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    reply_message: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if message.get("reasoning_content"):
        reply_message["thinking"] = message["reasoning_content"]
    if message.get("tool_calls"):
        reply_message["tool_calls"] = tool_calls(message["tool_calls"])
    reply: dict[str, Any] = {"model": model, "created_at": now_iso(), "message": reply_message}
    if (probs := logprobs(choice)) is not None:
        reply["logprobs"] = probs
    return {
        **reply,
        "done": True,
        "done_reason": done_reason(choice.get("finish_reason")),
        **timer.fields(),
    }


def generate_reply(body: dict[str, Any], model: str, timer: Timer) -> dict[str, Any]:
    """A non-streamed chat or text completion as an `/api/generate` answer."""
    timer.saw(body)
    choice = (body.get("choices") or [{}])[0]
    text = choice.get("text")
    if text is None:
        text = (choice.get("message") or {}).get("content") or ""
    reply: dict[str, Any] = {"model": model, "created_at": now_iso(), "response": text}
    if thinking := (choice.get("message") or {}).get("reasoning_content"):
        reply["thinking"] = thinking
    if (probs := logprobs(choice)) is not None:
        reply["logprobs"] = probs
    return {
        **reply,
        "done": True,
        "done_reason": done_reason(choice.get("finish_reason")),
        **timer.fields(),
    }


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


class _ToolCalls:
    """Tool calls streamed in pieces (OpenAI), gathered whole (Ollama sends them whole)."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, deltas: list[dict[str, Any]]) -> None:
        for delta in deltas:
            call = self.calls.setdefault(
                int(delta.get("index", len(self.calls))), {"function": {"arguments": ""}}
            )
            function = delta.get("function") or {}
            if function.get("name"):
                call["function"]["name"] = function["name"]
            call["function"]["arguments"] += function.get("arguments") or ""

    def whole(self) -> list[dict[str, Any]]:
        return tool_calls([self.calls[i] for i in sorted(self.calls)])


async def stream_lines(
    outcome: CompletionStream, model: str, timer: Timer, *, chat: bool
) -> AsyncIterator[bytes]:
    """An OpenAI stream as Ollama NDJSON: one line per piece of output, then the `done` line;
    a failure mid-way ends with an `{"error": ...}` line instead."""
    calls = _ToolCalls()
    finish: object = None
    try:
        async for chunk in openai_chunks(outcome.events):
            timer.saw(chunk)
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("tool_calls"):
                    calls.add(delta["tool_calls"])
                text = choice.get("text") if "text" in choice else delta.get("content")
                thinking = delta.get("reasoning_content")
                if text or thinking:
                    timer.output()
                    yield line(_piece(model, text or "", thinking, choice, chat))
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
    except StreamFailed as exc:
        yield line({"error": exc.message})
        return
    finally:
        await close_events(outcome.events)
    last: dict[str, Any] = {"model": model, "created_at": now_iso()}
    if chat:
        last["message"] = {"role": "assistant", "content": ""}
        if calls.calls:
            last["message"]["tool_calls"] = calls.whole()
    else:
        last["response"] = ""
    yield line({**last, "done": True, "done_reason": done_reason(finish), **timer.fields()})


def _piece(
    model: str, text: str, thinking: str | None, choice: dict[str, Any], chat: bool
) -> dict[str, Any]:
    piece: dict[str, Any] = {"model": model, "created_at": now_iso()}
    if chat:
        piece["message"] = {"role": "assistant", "content": text}
        if thinking:
            piece["message"]["thinking"] = thinking
    else:
        piece["response"] = text
        if thinking:
            piece["thinking"] = thinking
    if (probs := logprobs(choice)) is not None:
        piece["logprobs"] = probs
    return {**piece, "done": False}
