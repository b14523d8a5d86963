"""The chat calls `hearth chat` and `hearth run` make to a running Hearth: streamed or whole, with
the server's errors turned into one-line `ChatError`s."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

Message = dict[str, str]
# Called with each piece of the answer as it arrives; True for reasoning ("thinking") text.
OnText = Callable[[str, bool], None]


class ChatError(Exception):
    """A failed chat call, in one line for the terminal (no traceback)."""


@dataclass
class Reply:
    """A streamed answer: its text, the tokens the server counted and how long it took."""

    text: str = ""
    completion_tokens: int | None = None
    chunks: int = 0  # pieces of output: the token count when the server sends no usage
    sent_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    engine_tokens_per_s: float | None = None  # llama.cpp's own `timings`, when relayed
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.chunks

    @property
    def tokens_per_s(self) -> float | None:
        if self.engine_tokens_per_s:
            return self.engine_tokens_per_s
        if self.finished_at is None or self.tokens < 1:
            return None
        if self.first_token_at is not None and self.tokens >= 2:
            elapsed = self.finished_at - self.first_token_at
            # The first token's time is the prompt's; the rate is of the tokens after it.
            if elapsed > 0:
                return (self.tokens - 1) / elapsed
        if self.sent_at is not None and self.finished_at > self.sent_at:
            return self.tokens / (self.finished_at - self.sent_at)  # one token: the whole wait
        return None


class ChatClient:
    """POST /v1/chat/completions on one Hearth (or any OpenAI-compatible server)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=5),
            trust_env=False,  # a loopback Hearth must not go through the user's proxy
        )

    def close(self) -> None:
        self._http.close()

    def answers(self) -> bool:
        """Whether a Hearth answers at this URL (any HTTP status from /health counts)."""
        try:
            self._http.get("/health", timeout=3)
        except httpx.HTTPError:
            return False
        return True

    def complete(self, model: str, messages: list[Message]) -> dict[str, Any]:
        """The whole API answer (no stream)."""
        body = {"model": model, "messages": messages}
        try:
            response = self._http.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise ChatError(_error_message(response.status_code, response.text))
        answer: dict[str, Any] = response.json()
        return answer

    def stream(self, model: str, messages: list[Message], on_text: OnText) -> Reply:
        """Stream an answer, giving each piece to `on_text`. A KeyboardInterrupt while it streams
        closes the connection (so the engine stops) and propagates."""
        body = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        reply = Reply(sent_at=time.monotonic())
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ChatError(_error_message(response.status_code, response.text))
                for chunk in _events(response.iter_lines()):
                    _apply(chunk, reply, on_text)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        reply.finished_at = time.monotonic()
        return reply

    def _unreachable(self, exc: httpx.HTTPError) -> ChatError:
        if isinstance(exc, httpx.TimeoutException):
            return ChatError(f"Hearth at {self.base_url} did not answer in time")
        if isinstance(exc, httpx.RemoteProtocolError):
            return ChatError(f"Hearth at {self.base_url} broke off the answer: {exc}")
        return ChatError(f"no Hearth answers at {self.base_url} ({exc})")


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            if isinstance(event.get("error"), dict):
                raise ChatError(str(event["error"].get("message") or event["error"]))
            yield event


def _apply(chunk: dict[str, Any], reply: Reply, on_text: OnText) -> None:
    if isinstance(chunk.get("usage"), dict):
        reply.usage = chunk["usage"]
        tokens = chunk["usage"].get("completion_tokens")
        reply.completion_tokens = tokens if isinstance(tokens, int) else None
    timings = chunk.get("timings")
    if isinstance(timings, dict) and isinstance(timings.get("predicted_per_second"), int | float):
        reply.engine_tokens_per_s = float(timings["predicted_per_second"])
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        for key, reasoning in (("reasoning_content", True), ("content", False)):
            text = delta.get(key)
            if isinstance(text, str) and text:
                if reply.first_token_at is None:
                    reply.first_token_at = time.monotonic()
                reply.chunks += 1
                if not reasoning:
                    reply.text += text
                on_text(text, reasoning)
        if choice.get("finish_reason"):
            reply.finish_reason = choice["finish_reason"]


def _error_message(status: int, text: str) -> str:
    """The server's own message (OpenAI's error shape), else the status and the start of the
    body."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    snippet = " ".join(text.split())[:200]
    return f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}"
