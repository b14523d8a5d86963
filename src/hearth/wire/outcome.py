"""What a routed request gives back: a whole answer or a stream of server-sent events, with
where it came from. Endpoint families (OpenAI, Ollama, Anthropic) turn these into their own
wire shapes."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Completion:
    """A non-streamed OpenAI-shaped answer (`chat.completion` or `text_completion`)."""

    body: dict[str, Any]
    deployment: str
    attempts: int = 1
    cached: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # e.g. the caller's x-ratelimit-*


@dataclass
class CompletionStream:
    """OpenAI-shaped server-sent events, whole events at a time (`data: {...}\\n\\n`). The last
    event is always `data: [DONE]`; a failure after output started arrives as a
    `data: {"error": {...}}` event just before it. `aclose` must run when the consumer is done or
    gone (it frees the engine slot and the upstream connection); it is safe to call twice."""

    events: AsyncGenerator[bytes, None]
    deployment: str
    aclose: Callable[[], Awaitable[None]]
    attempts: int = 1
    cached: bool = False
    headers: dict[str, str] = field(default_factory=dict)
