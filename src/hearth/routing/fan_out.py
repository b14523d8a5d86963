"""`n` > 1 on a local engine: n requests sent to it at once (they batch in its slots), their
answers merged into one with choices 0..n-1, whole or as one interleaved stream.

Usage counts the completion tokens of every choice and the prompt once, as OpenAI bills it: the
client sent one prompt (the engine evaluates it once per slot, which Hearth does not charge). With
a `seed`, choice i is generated with seed + i, so the choices differ and each can be reproduced
by a single request with that seed. One failure fails the whole answer and cancels the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hearth.errors import UpstreamDisconnected
from hearth.routing.streams import END_MARKER, OpenedStream

T = TypeVar("T")
SEED_SPACE = 2**64


def split(fields: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The n engine requests of one request for n choices."""
    parts = []
    for i in range(n):
        part = {k: v for k, v in fields.items() if k != "n"}
        if isinstance(part.get("seed"), int):
            part["seed"] = (part["seed"] + i) % SEED_SPACE
        if part.get("stream"):
            # Each part's usage is needed for the total, whatever the client asked.
            part["stream_options"] = {**(part.get("stream_options") or {}), "include_usage": True}
        parts.append(part)
    return parts


async def gather_all(calls: list[Callable[[], Coroutine[Any, Any, T]]]) -> list[T]:
    """Run the calls at once; the first failure cancels the others and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call()) for call in calls]
    except BaseExceptionGroup as failed:
        raise _first(failed) from None
    return [task.result() for task in tasks]


def read_ahead(
    opened: OpenedStream,
    ended: Callable[[], Coroutine[Any, Any, None]],
    stack: contextlib.AsyncExitStack,
) -> OpenedStream:
    """The stream, read to its end at once into memory so that its choice's engine slot is free
    for the other choices however slowly the client reads (they may be queued for that slot:
    held until the client had read every choice, n above the free slots would never finish).
    `ended` runs once it has ended or failed (it releases the slot); `stack` stops the reading
    if the request ends first."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for block in opened.rest:
                queue.put_nowait(block)
            queue.put_nowait(None)
        except Exception as exc:
            queue.put_nowait(exc)
        finally:
            await ended()

    reader = asyncio.get_running_loop().create_task(pump())

    async def stop_reading() -> None:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

    stack.push_async_callback(stop_reading)

    async def rest() -> AsyncIterator[bytes]:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    return OpenedStream(opened.first, rest(), opened.hide_usage, opened.on_crash)


def merge_answers(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Whole answers as one, their choices numbered in order."""
    merged = {k: v for k, v in bodies[0].items() if k not in ("timings", "choices")}
    merged["choices"] = []
    for i, body in enumerate(bodies):
        for choice in body.get("choices") or []:
            merged["choices"].append({**choice, "index": i})
    usage = total_usage([body.get("usage") for body in bodies])
    if usage is not None:
        merged["usage"] = usage
    return merged


def total_usage(usages: list[Any]) -> dict[str, Any] | None:
    """Completion tokens of every choice; the prompt once (it is one prompt)."""
    given = [u for u in usages if isinstance(u, dict)]
    if not given:
        return None
    completion = sum(int(u.get("completion_tokens") or 0) for u in given)
    total = {k: v for k, v in given[0].items() if k not in ("completion_tokens", "total_tokens")}
    prompt = int(given[0].get("prompt_tokens") or 0)
    total.update(completion_tokens=completion, total_tokens=prompt + completion)
    return total


def merge_streams(streams: list[OpenedStream], client_wants_usage: bool) -> OpenedStream:
    """The streams as one: chunks interleaved as they come, each choice with its index, one
    usage chunk at the end (dropped by the relay unless the client asked) and one end marker."""
    merger = _Merger(len(streams))
    first = b"".join(merger.events(i, stream.first) for i, stream in enumerate(streams))
    return OpenedStream(
        first, _interleaved(streams, merger), hide_usage=not client_wants_usage, on_crash=None
    )


async def _interleaved(streams: list[OpenedStream], merger: _Merger) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[tuple[int, bytes | None, BaseException | None]] = asyncio.Queue()

    async def read(i: int, stream: OpenedStream) -> None:
        try:
            async for block in stream.rest:
                await queue.put((i, block, None))
        except Exception as exc:
            await queue.put((i, None, exc))
            return
        await queue.put((i, None, None))

    readers = [asyncio.create_task(read(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            i, block, failure = await queue.get()
            if failure is not None:
                crashed = streams[i].on_crash
                if isinstance(failure, UpstreamDisconnected) and crashed is not None:
                    await crashed()
                raise failure
            if block is None:
                remaining -= 1
                continue
            out = merger.events(i, block)
            if out:
                yield out
            if merger.failed:
                yield END_MARKER + b"\n\n"
                return
        yield merger.closing()
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for stream in streams:
            with contextlib.suppress(Exception):
                await stream.rest.aclose()  # type: ignore[attr-defined]


@dataclass
class _Merger:
    """Rewrites the parts' events into the merged stream's: one id, choice index = part."""

    parts: int
    id: str | None = None
    head: dict[str, Any] = field(default_factory=dict)  # object, created, model of the stream
    usages: dict[int, Any] = field(default_factory=dict)
    failed: bool = False

    def events(self, part: int, block: bytes) -> bytes:
        out: list[bytes] = []
        for event in re.split(rb"\r?\n\r?\n", block):
            event = event.strip()
            if not event or event == END_MARKER or self.failed:
                continue
            rewritten = self._event(part, event)
            if rewritten is not None:
                out.append(rewritten + b"\n\n")
        return b"".join(out)

    def _event(self, part: int, event: bytes) -> bytes | None:
        if not event.startswith(b"data:"):
            return event
        try:
            chunk = json.loads(event[5:])
        except ValueError:
            return event
        if not isinstance(chunk, dict):
            return event
        if "error" in chunk and not chunk.get("choices"):
            self.failed = True
            return event
        if isinstance(chunk.get("usage"), dict):
            self.usages[part] = chunk.pop("usage")
        chunk.pop("timings", None)
        if not chunk.get("choices"):
            return None
        if self.id is None:
            self.id = chunk.get("id")
            self.head = {k: chunk[k] for k in ("object", "created", "model") if k in chunk}
        if self.id is not None:
            chunk["id"] = self.id
        for choice in chunk["choices"]:
            choice["index"] = part
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode()

    def closing(self) -> bytes:
        usage = total_usage([self.usages.get(i) for i in range(self.parts)])
        out = b""
        if usage is not None:
            chunk = {"id": self.id, **self.head, "choices": [], "usage": usage}
            out = b"data: " + json.dumps(chunk).encode() + b"\n\n"
        return out + END_MARKER + b"\n\n"


def _first(group: BaseExceptionGroup) -> BaseException:
    """The failure that cancelled the rest (not one of the cancellations it caused)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
