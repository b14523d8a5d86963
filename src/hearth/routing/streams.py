"""Relaying a routed stream to the client: whole events as they come, usage noted, a failure after
output started turned into an error event followed by the end marker, and a complete stream
handed to the response cache."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hearth.deployments.deployment import Deployment
from hearth.errors import APIError, UpstreamDisconnected
from hearth.routing.request import RoutedRequest
from hearth.upstream.client import EVENT_ENDS, EventStream

log = logging.getLogger(__name__)

END_MARKER = b"data: [DONE]"
DELIVERED = 200
_EMPTY_CONTENT = re.compile(rb'"content"\s*:\s*(""|null)')


@dataclass
class OpenedStream:
    """A stream whose first event has arrived: from here on, nothing is retried."""

    first: bytes
    rest: AsyncIterator[bytes]
    hide_usage: bool = False  # Hearth asked for the usage chunk; the client did not
    on_crash: Callable[[], Awaitable[Any]] | None = None

    @classmethod
    async def start(
        cls,
        stream: EventStream,
        *,
        hide_usage: bool = False,
        on_crash: Callable[[], Awaitable[Any]] | None = None,
    ) -> OpenedStream:
        """Wait for the first event; failures until then raise, so the request can be retried."""
        events = stream.events()
        first = await anext(events)
        return cls(first, events, hide_usage, on_crash)


def error_event(exc: APIError) -> bytes:
    return b"data: " + json.dumps(exc.to_body()).encode() + b"\n\ndata: [DONE]\n\n"


async def relay(
    opened: OpenedStream,
    request: RoutedRequest,
    deployment: Deployment,
    stack: contextlib.AsyncExitStack,
    store: Callable[[bytes], Awaitable[None]] | None,
) -> AsyncGenerator[bytes, None]:
    """Relay events as they come. Leaving early (the client hung up) closes the upstream
    connection, which makes an engine stop generating."""
    trace = request.trace
    seen = bytearray() if store is not None else None
    complete = False
    produced = 0  # events that carried output: the token count when no usage comes
    try:
        chunk: bytes | None = opened.first
        while chunk is not None:
            produced += _output_events(chunk)
            if b'"usage"' in chunk:
                chunk = _note_usage(chunk, request, opened.hide_usage)
            if seen is not None:
                seen += chunk
            if chunk.rstrip().endswith(END_MARKER) and trace.status is None:
                # Everything is sent with this: a client that hangs up now (as most do on
                # reading the end marker) has had its whole answer, not left early.
                trace.status = DELIVERED
            if chunk:
                yield chunk
            chunk = await anext(opened.rest, None)
        complete = True
    except APIError as exc:
        log.warning("stream from %s failed mid-way: %s", deployment.name, exc.message)
        trace.status = exc.status_code
        if deployment.kind == "remote":  # a local engine's crash is its supervisor's business
            deployment.stats.breaker.record_failure()
        if isinstance(exc, UpstreamDisconnected) and opened.on_crash is not None:
            await opened.on_crash()
        yield error_event(exc)
    finally:
        if trace.usage is None and produced:
            trace.usage = _estimated_usage(request.fields, produced)
        if complete and store is not None and seen is not None:
            await store(bytes(seen))
        # A stream made of others (n choices, routing/fan_out.py) stops its readers on close.
        close = getattr(opened.rest, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
        await stack.aclose()


async def replay(events: bytes) -> AsyncGenerator[bytes, None]:
    """A cached stream, sent whole."""
    yield events


def _note_usage(chunk: bytes, request: RoutedRequest, hide_usage: bool) -> bytes:
    """Record the usage an event carries; drop usage-only events the client did not ask for.
    Only the events holding `"usage"` are parsed: a chunk can hold a whole answer's events."""
    kept: list[bytes] = []
    done = 0  # chunk[:done] is decided
    found = chunk.find(b'"usage"')
    while found != -1:
        start, end = _event_around(chunk, found)
        data = _usage_event(chunk[start:end])
        if data is not None:
            request.trace.usage = data["usage"]
            if hide_usage and not data.get("choices"):
                kept.append(chunk[done:start])
                done = end
        found = chunk.find(b'"usage"', end)
    if not done:
        return chunk
    kept.append(chunk[done:])
    return b"".join(kept)


def _event_around(chunk: bytes, position: int) -> tuple[int, int]:
    """The bounds of the event holding `position`, its blank line included. JSON text never
    holds a raw newline, so blank lines are always event boundaries."""
    starts = [i + len(sep) for sep in EVENT_ENDS if (i := chunk.rfind(sep, 0, position)) != -1]
    start = max(starts, default=0)
    ends = [(i, len(sep)) for sep in EVENT_ENDS if (i := chunk.find(sep, position)) != -1]
    if not ends:
        return start, len(chunk)
    end, length = min(ends)
    return start, end + length


def _usage_event(event: bytes) -> dict[str, Any] | None:
    """The data of an event that reports usage, or None."""
    body = event.strip()
    if not body.startswith(b"data: {"):
        return None
    try:
        data = json.loads(body[6:])
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("usage"), dict):
        return data
    return None


def _output_events(chunk: bytes) -> int:
    """Events in a chunk that carry generated text or tool-call arguments (counted by their keys:
    inside JSON strings quotes are escaped, so these bytes only ever match keys)."""
    return (
        chunk.count(b'"content"') - len(_EMPTY_CONTENT.findall(chunk)) + chunk.count(b'"arguments"')
    )


def _estimated_usage(fields: dict[str, Any], output_events: int) -> dict[str, Any]:
    """Usage for an upstream that reported none: one token per output event (what streaming
    servers send) and about four characters per prompt token."""
    prompt = fields.get("messages", fields.get("prompt", ""))
    prompt_tokens = len(json.dumps(prompt)) // 4
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output_events,
        "total_tokens": prompt_tokens + output_events,
        "estimated": True,
    }
