"""An OpenAI chat stream as Responses API server-sent events, each with its `sequence_number`:
`response.created`, `response.in_progress`; per output item `response.output_item.added`, its
parts and deltas (`response.reasoning_text.*`, `response.content_part.*` +
`response.output_text.*`, `response.function_call_arguments.*`) and `response.output_item.done`;
then `response.completed` (or `response.incomplete`). A failure mid-way, or Hearth's shutdown,
ends with `response.failed` carrying the error, never a clean-looking end."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from hearth.api.responses.protocol import ResponsesRequest
from hearth.api.responses.translate import (
    Item,
    function_call_item,
    message_item,
    new_id,
    output_text,
    reasoning_item,
    response_object,
    status_of,
)
from hearth.errors import ShuttingDown
from hearth.wire.chunks import StreamFailed, close_events, openai_chunks
from hearth.wire.outcome import CompletionStream

Finish = Callable[[dict[str, Any]], Awaitable[None]]


class _Open:
    """The output item being written: its kind ("reasoning", "message", "call"), key (a tool
    call's OpenAI index), index in `output`, and text so far."""

    def __init__(self, kind: str, key: int, index: int, item: Item) -> None:
        self.kind, self.key, self.index, self.item = kind, key, index, item
        self.text = ""


class ResponseEvents:
    def __init__(
        self, request: ResponsesRequest, response_id: str, created_at: int, finish: Finish
    ) -> None:
        self.request = request
        self.id = response_id
        self.created_at = created_at
        self.finish = finish  # stores the completed response before the client hears of it
        self.sequence = 0
        self.output: list[Item] = []
        self.open: _Open | None = None

    def event(self, kind: str, data: dict[str, Any]) -> bytes:
        body = json.dumps({"type": kind, "sequence_number": self.sequence, **data})
        self.sequence += 1
        return f"event: {kind}\ndata: {body}\n\n".encode()

    def response(self, status: str, **more: Any) -> dict[str, Any]:
        return response_object(
            self.request, self.id, self.created_at, status=status, output=self.output, **more
        )

    async def events(self, outcome: CompletionStream) -> AsyncIterator[bytes]:
        yield self.event("response.created", {"response": self.response("in_progress")})
        yield self.event("response.in_progress", {"response": self.response("in_progress")})
        finish: object = None
        totals: dict[str, Any] | None = None
        try:
            async for chunk in openai_chunks(outcome.events):
                if isinstance(chunk.get("usage"), dict):
                    totals = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if text := delta.get("reasoning_content"):
                        for out in self._reasoning(str(text)):
                            yield out
                    if text := delta.get("content"):
                        for out in self._text(str(text)):
                            yield out
                    for call in delta.get("tool_calls") or []:
                        for out in self._call(call):
                            yield out
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        except StreamFailed as exc:
            yield self.failed(_error(exc))
            return
        finally:
            await close_events(outcome.events)
        status = status_of(finish)
        if not self.output and self.open is None:  # nothing said: an empty message, as OpenAI
            for out in self._text(""):
                yield out
        for out in self._close(status):
            yield out
        response = self.response(status, usage=totals or {}, finish_reason=finish)
        await self.finish(response)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        yield self.event(kind, {"response": response})

    def failed(self, error: dict[str, Any]) -> bytes:
        """`response.failed`, with what was said until then."""
        output = [*self.output]
        if self.open is not None:
            output.append({**self._item_now(self.open), "status": "incomplete"})
        response = response_object(
            self.request, self.id, self.created_at, status="failed", output=output, error=error
        )
        return self.event("response.failed", {"response": response})

    def cut_event(self) -> bytes:
        """What a stream that Hearth's shutdown cut short ends with."""
        return self.failed({"code": "server_error", "message": ShuttingDown().message})

    # Output items ------------------------------------------------------------------------------

    def _start(self, kind: str, key: int, item: Callable[[], Item]) -> list[bytes]:
        """Events that close the open item (if another) and add this one, made by `item`, (if
        not open already)."""
        if self.open is not None and (self.open.kind, self.open.key) == (kind, key):
            return []
        out = self._close("completed")
        made = item()
        self.open = _Open(kind, key, len(self.output), made)
        out.append(self.event("response.output_item.added", self._at({"item": made})))
        return out

    def _delta(self, kind: str, text: str, more: str = "") -> bytes:
        """A delta event, written directly: one per token, the bulk of a stream's events (the
        same JSON as `event` makes, at a fraction of its cost)."""
        assert self.open is not None
        number = self.sequence
        self.sequence += 1
        return (
            f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":{number},'
            f'"item_id":"{self.open.item["id"]}","output_index":{self.open.index}{more},'
            f'"delta":{json.dumps(text)}}}\n\n'
        ).encode()

    def _at(self, data: dict[str, Any], *, part: bool = False) -> dict[str, Any]:
        """`data` with the open item's place: its id, index in the output (and content part)."""
        assert self.open is not None
        where: dict[str, Any] = {"item_id": self.open.item["id"], "output_index": self.open.index}
        if part:
            where["content_index"] = 0
        return {**where, **data}

    def _reasoning(self, text: str) -> list[bytes]:
        started = self.open is None or self.open.kind != "reasoning"
        out = self._start(
            "reasoning",
            0,
            lambda: {**reasoning_item(new_id("rs"), "", "in_progress"), "content": []},
        )
        if started:
            part = {"type": "reasoning_text", "text": ""}
            out.append(
                self.event("response.content_part.added", self._at({"part": part}, part=True))
            )
        assert self.open is not None
        self.open.text += text
        out.append(self._delta("response.reasoning_text.delta", text, ',"content_index":0'))
        return out

    def _text(self, text: str) -> list[bytes]:
        started = self.open is None or self.open.kind != "message"
        out = self._start(
            "message", 0, lambda: {**message_item(new_id("msg"), "", "in_progress"), "content": []}
        )
        if started:
            out.append(
                self.event(
                    "response.content_part.added", self._at({"part": output_text("")}, part=True)
                )
            )
        assert self.open is not None
        self.open.text += text
        if text:
            out.append(
                self._delta("response.output_text.delta", text, ',"content_index":0,"logprobs":[]')
            )
        return out

    def _call(self, call: dict[str, Any]) -> list[bytes]:
        key = int(call.get("index", 0))
        function = call.get("function") or {}
        out = self._start(
            "call",
            key,
            lambda: function_call_item(
                new_id("fc"),
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                "",
                "in_progress",
            ),
        )
        if arguments := function.get("arguments"):
            assert self.open is not None
            self.open.text += str(arguments)
            out.append(self._delta("response.function_call_arguments.delta", str(arguments)))
        return out

    def _item_now(self, open_item: _Open) -> Item:
        """The open item with what it holds so far."""
        item = open_item.item
        if open_item.kind == "reasoning":
            return reasoning_item(item["id"], open_item.text, "completed")
        if open_item.kind == "message":
            return message_item(item["id"], open_item.text, "completed")
        return function_call_item(
            item["id"], item["call_id"], item["name"], open_item.text, "completed"
        )

    def _close(self, status: str) -> list[bytes]:
        """Events that finish the open item; it joins the output."""
        current = self.open
        if current is None:
            return []
        done = {**self._item_now(current), "status": status}
        out: list[bytes] = []
        if current.kind == "reasoning":
            part = {"type": "reasoning_text", "text": current.text}
            out.append(
                self.event(
                    "response.reasoning_text.done", self._at({"text": current.text}, part=True)
                )
            )
            out.append(
                self.event("response.content_part.done", self._at({"part": part}, part=True))
            )
        elif current.kind == "message":
            out.append(
                self.event(
                    "response.output_text.done",
                    self._at({"text": current.text, "logprobs": []}, part=True),
                )
            )
            out.append(
                self.event(
                    "response.content_part.done",
                    self._at({"part": output_text(current.text)}, part=True),
                )
            )
        else:
            out.append(
                self.event(
                    "response.function_call_arguments.done",
                    {
                        "item_id": done["id"],
                        "output_index": current.index,
                        "name": done["name"],
                        "arguments": current.text,
                    },
                )
            )
        out.append(
            self.event("response.output_item.done", {"output_index": current.index, "item": done})
        )
        self.output.append(done)
        self.open = None
        return out


def _error(failure: StreamFailed) -> dict[str, Any]:
    """The Response's `error` for a chat stream's error event (OpenAI's codes for a Response
    are few: a rate limit, or a server error)."""
    given = failure.error.get("code")
    code = "rate_limit_exceeded" if given in (429, "rate_limit_exceeded") else "server_error"
    error: dict[str, Any] = {"code": code, "message": failure.message}
    if isinstance(param := failure.error.get("param"), str):
        error["param"] = param
    return error
