"""An OpenAI chat stream as Messages API server-sent events: `message_start`, then for each
content block `content_block_start`, its `content_block_delta`s (`text_delta`,
`input_json_delta`, `thinking_delta` for an engine's reasoning) and `content_block_stop`, then
`message_delta` (stop reason, usage) and `message_stop`. A failure mid-way ends with an `error`
event instead, never a clean stop.

Input tokens are known only at the end (OpenAI streams report usage last): `message_start` says
0 and `message_delta` carries the count, which the SDKs take as the total.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from hearth.api.anthropic.protocol import MessagesRequest, error_type
from hearth.api.anthropic.translate import new_id, stop_reason, thinking_block, usage
from hearth.wire.chunks import StreamFailed, close_events, openai_chunks
from hearth.wire.outcome import CompletionStream


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


class _Blocks:
    """The content block being written: text, or one tool call (by its OpenAI index)."""

    def __init__(self) -> None:
        self.count = 0
        # ("thinking", 0), ("text", 0) or ("tool", openai index)
        self.open: tuple[str, int] | None = None

    def switch(self, kind: str, key: int, start: dict[str, Any]) -> list[bytes]:
        """Events that close the open block (if another) and start this one (if not open)."""
        if self.open == (kind, key):
            return []
        out = self.close()
        self.open = (kind, key)
        out.append(event("content_block_start", {"index": self.count, "content_block": start}))
        return out

    def close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        self.count += 1
        return [event("content_block_stop", {"index": self.count - 1})]

    @property
    def index(self) -> int:
        return self.count


async def message_events(
    outcome: CompletionStream, model: str, request: MessagesRequest
) -> AsyncIterator[bytes]:
    message: dict[str, Any] = {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    yield event("message_start", {"message": message})
    blocks = _Blocks()
    finish: object = None
    last_choice: dict[str, Any] = {}
    totals: object = None
    tool_ids: dict[int, str] = {}
    try:
        async for chunk in openai_chunks(outcome.events):
            if chunk.get("usage"):
                totals = chunk["usage"]
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if thinking := delta.get("reasoning_content"):
                    for out in blocks.switch("thinking", 0, thinking_block("")):
                        yield out
                    yield _delta(blocks.index, {"type": "thinking_delta", "thinking": thinking})
                if text := delta.get("content"):
                    for out in blocks.switch("text", 0, {"type": "text", "text": ""}):
                        yield out
                    yield _delta(blocks.index, {"type": "text_delta", "text": text})
                for call in delta.get("tool_calls") or []:
                    key = int(call.get("index", 0))
                    function = call.get("function") or {}
                    if key not in tool_ids:
                        tool_ids[key] = call.get("id") or new_id("toolu")
                    start = {
                        "type": "tool_use",
                        "id": tool_ids[key],
                        "name": function.get("name", ""),
                        "input": {},
                    }
                    for out in blocks.switch("tool", key, start):
                        yield out
                    if arguments := function.get("arguments"):
                        yield _delta(
                            blocks.index, {"type": "input_json_delta", "partial_json": arguments}
                        )
                if choice.get("finish_reason"):
                    finish, last_choice = choice["finish_reason"], choice
    except StreamFailed as exc:
        status = exc.error.get("code")
        kind = error_type(status) if isinstance(status, int) else "api_error"
        yield event("error", {"error": {"type": kind, "message": exc.message}})
        return
    finally:
        await close_events(outcome.events)
    for out in blocks.close():
        yield out
    if tool_ids and finish == "stop":
        finish = "tool_calls"
    reason, sequence = stop_reason(finish, last_choice, request.stop_sequences)
    yield event(
        "message_delta",
        {"delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": usage(totals)},
    )
    yield event("message_stop", {})


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return event("content_block_delta", {"index": index, "delta": delta})
