"""One benchmark request to an OpenAI-compatible endpoint, timed, and what it tells.

aiohttp rather than httpx: against a static nginx upstream it spent 0.3 ms of CPU per request
where httpx spent 1.8-2.4 ms one at a time and 6.5-9 ms at concurrency 64, so the generator is
not what a benchmark of a fast gateway measures.
Foreign errors become an `Outcome` with a message here; nothing is raised to the load loop.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

# Text fields of a streamed chunk that carry generated tokens (reasoning models stream the
# reasoning first; it is generation all the same).
_CHAT_FIELDS = ("content", "reasoning_content", "reasoning")
_ERROR_TEXT_LIMIT = 300
_TITLE = re.compile(r"<title>(.*?)</title>", re.I | re.S)


@dataclass
class Outcome:
    """What one request gave: its timings and token counts, or why it failed."""

    latency_s: float
    error: str | None = None
    ttft_s: float | None = None
    output_tokens: int = 0
    prompt_tokens: int | None = None
    tokens_from_usage: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class Target:
    """One endpoint, one request body (serialised once) and the session that sends it."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        chat: bool,
    ) -> None:
        self.session = session
        self.url = url
        self.body = json.dumps(body).encode()
        self.headers = {"Content-Type": "application/json", **headers}
        self.stream = bool(body.get("stream"))
        self.chat = chat

    async def send(self) -> Outcome:
        sent = time.perf_counter()
        try:
            async with self.session.post(self.url, data=self.body, headers=self.headers) as reply:
                if reply.status != 200:
                    text = await reply.text(errors="replace")
                    return Outcome(time.perf_counter() - sent, _status_error(reply.status, text))
                if self.stream:
                    return await self._read_stream(reply, sent)
                return _answer(await reply.read(), sent)
        except TimeoutError:
            return Outcome(time.perf_counter() - sent, "timed out")
        except aiohttp.ClientConnectorError as exc:
            why = exc.os_error.strerror or str(exc.os_error)
            where = f"{exc.host}:{exc.port}"
            return Outcome(time.perf_counter() - sent, f"cannot connect to {where}: {why}")
        except (aiohttp.ClientError, ValueError) as exc:
            return Outcome(time.perf_counter() - sent, _describe(exc))

    async def _read_stream(self, reply: aiohttp.ClientResponse, sent: float) -> Outcome:
        events = _Events(self.chat, sent)
        outcome: Outcome | None = None
        buffer = b""
        # Whole reads split into lines here cost about a third less CPU than aiohttp's readline.
        # What follows [DONE] is read too (and ignored), so the connection can be reused.
        async for data in reply.content.iter_any():
            if outcome is not None:
                continue
            buffer += data
            if b"\n" not in data:
                continue
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if events.feed(line):
                    outcome = events.outcome()
                    break
        if outcome is None and buffer and events.feed(buffer):
            outcome = events.outcome()
        if outcome is None:
            return Outcome(time.perf_counter() - sent, "the stream ended before data: [DONE]")
        return outcome


class _Events:
    """The state of one SSE answer, fed a line at a time."""

    def __init__(self, chat: bool, sent: float) -> None:
        self.chat = chat
        self.sent = sent
        self.ttft: float | None = None
        self.chunks = 0
        self.usage: Mapping[str, Any] | None = None
        self.error: str | None = None

    def feed(self, line: bytes) -> bool:
        """Take one line; True when the answer is over ([DONE] or an error)."""
        if not line.startswith(b"data:"):
            return False  # blank separators, `event:`, `id:` and `: comment` lines
        data = line[5:].strip()
        if data == b"[DONE]":
            return True
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            self.error = "a stream chunk is not a JSON object"
            return True
        if "error" in chunk:
            self.error = "error event: " + _message(chunk)
            return True
        if _has_text(chunk, self.chat):
            self.chunks += 1
            if self.ttft is None:
                self.ttft = time.perf_counter() - self.sent
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        return False

    def outcome(self) -> Outcome:
        latency = time.perf_counter() - self.sent
        if self.error is not None:
            return Outcome(latency, self.error)
        outcome = Outcome(latency, ttft_s=self.ttft, output_tokens=self.chunks)
        _apply_usage(outcome, self.usage)
        return outcome


def _answer(body: bytes, sent: float) -> Outcome:
    latency = time.perf_counter() - sent
    answer = json.loads(body)
    if not isinstance(answer, dict) or "choices" not in answer:
        return Outcome(
            latency, "the answer has no choices: " + _clip(body.decode(errors="replace"))
        )
    outcome = Outcome(latency)
    _apply_usage(outcome, answer.get("usage"))
    return outcome


def _apply_usage(outcome: Outcome, usage: object) -> None:
    """Token counts from `usage` when the server gave them (else the chunk count stays)."""
    if not isinstance(usage, Mapping):
        return
    completion, prompt = usage.get("completion_tokens"), usage.get("prompt_tokens")
    if isinstance(completion, int):
        outcome.output_tokens = completion
        outcome.tokens_from_usage = True
    if isinstance(prompt, int):
        outcome.prompt_tokens = prompt


def _has_text(chunk: Mapping[str, Any], chat: bool) -> bool:
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    if not chat:
        return bool(choice.get("text"))
    delta = choice.get("delta")
    return isinstance(delta, dict) and any(delta.get(name) for name in _CHAT_FIELDS)


def _status_error(status: int, text: str) -> str:
    try:
        detail = _message(json.loads(text))
    except ValueError:  # not JSON: an HTML error page's title, or the text on one line
        title = _TITLE.search(text)
        detail = _clip(" ".join((title.group(1) if title else text).split())) or "(empty body)"
    return f"HTTP {status}: {detail}"


def _message(body: object) -> str:
    """The message of an OpenAI-shaped error body, else the body itself, shortened."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return _clip(error["message"])
        if isinstance(error, str):
            return _clip(error)
        if isinstance(body.get("detail"), str):
            return _clip(body["detail"])
    return _clip(json.dumps(body))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg}"
    text = str(exc)
    return type(exc).__name__ + (f": {_clip(text)}" if text else "")


def _clip(text: str) -> str:
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[: _ERROR_TEXT_LIMIT - 3] + "..."
