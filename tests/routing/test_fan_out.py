"""n > 1 as n engine requests merged into one answer (routing/fan_out.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from hearth.errors import EngineFailed
from hearth.routing.fan_out import gather_all, merge_answers, merge_streams, split
from hearth.routing.streams import OpenedStream
from support.hearth_server import HearthServer
from support.scripted_upstream import ScriptedUpstream


def test_split_drops_n_varies_the_seed_and_asks_for_usage() -> None:
    parts = split({"n": 3, "seed": 7, "stream": True, "messages": []}, 3)
    assert [p["seed"] for p in parts] == [7, 8, 9]
    assert all("n" not in p and p["stream_options"] == {"include_usage": True} for p in parts)
    assert [p.get("seed") for p in split({"n": 2}, 2)] == [None, None]
    assert split({"seed": 2**64 - 1}, 2)[1]["seed"] == 0


def body(text: str, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": f"id-{text}",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        "timings": {"predicted_n": completion},
    }


def test_merged_answers_number_choices_and_count_every_completion() -> None:
    merged = merge_answers([body("a", 10, 3), body("b", 10, 4), body("c", 10, 5)])
    assert [(c["index"], c["message"]["content"]) for c in merged["choices"]] == [
        (0, "a"),
        (1, "b"),
        (2, "c"),
    ]
    assert merged["usage"] == {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22}
    assert merged["id"] == "id-a" and "timings" not in merged


async def test_one_failure_cancels_the_others_and_is_raised() -> None:
    cancelled = asyncio.Event()

    async def slow() -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    async def fails() -> int:
        await asyncio.sleep(0.01)
        raise EngineFailed("boom")

    with pytest.raises(EngineFailed):
        await gather_all([slow, fails])
    assert cancelled.is_set()

    async def fine() -> int:
        return 2

    assert await gather_all([fine, fine]) == [2, 2]


def event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def part_stream(text: str, completion: int, delay: float) -> OpenedStream:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return event({"id": f"id-{text}", "object": "chat.completion.chunk", "choices": [choice]})

    async def rest() -> AsyncIterator[bytes]:
        for letter in text:
            await asyncio.sleep(delay)
            yield chunk({"content": letter})
        usage = {"prompt_tokens": 4, "completion_tokens": completion, "total_tokens": 4}
        yield chunk({}, "stop") + event({"id": "x", "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    return OpenedStream(chunk({"role": "assistant", "content": ""}), rest())


def parse(blocks: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for line in b"".join(blocks).split(b"\n\n"):
        if line == b"data: [DONE]":
            out.append("DONE")
        elif line.startswith(b"data: "):
            out.append(json.loads(line[6:]))
    return out


async def test_merged_streams_interleave_with_indexes_and_one_usage() -> None:
    merged = merge_streams(
        [part_stream("abc", 3, 0.01), part_stream("de", 2, 0.015), part_stream("f", 1, 0.001)],
        client_wants_usage=True,
    )
    assert not merged.hide_usage
    blocks = [merged.first]
    async for block in merged.rest:
        blocks.append(block)
    events = parse(blocks)
    assert events[-1] == "DONE" and events.count("DONE") == 1
    usage_events = [e for e in events[:-1] if "usage" in e]
    assert usage_events == [events[-2]]
    assert events[-2]["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    assert {e["id"] for e in events[:-1]} == {"id-abc"}
    texts: dict[int, str] = {}
    for e in events[:-2]:
        for choice in e["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + (
                choice["delta"].get("content") or ""
            )
    assert texts == {0: "abc", 1: "de", 2: "f"}
    order = [e["choices"][0]["index"] for e in events[3:-2] if e["choices"][0]["delta"]]
    assert order != sorted(order)  # interleaved as they came, not one after the other
    assert merge_streams([part_stream("a", 1, 0)], client_wants_usage=False).hide_usage


async def test_a_failing_part_fails_the_merged_stream() -> None:
    async def broken() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.01)
        raise EngineFailed("the engine went away")
        yield b""  # pragma: no cover

    merged = merge_streams(
        [part_stream("abcdefgh", 8, 0.05), OpenedStream(b"", broken())], client_wants_usage=False
    )
    with pytest.raises(EngineFailed):
        async for _ in merged.rest:
            pass


def test_a_remote_deployment_gets_n_as_sent_under_the_cap(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    hi: Any = [{"role": "user", "content": "hi"}]
    llm = gateway.openai()
    llm.chat.completions.create(model="plain", messages=hi, n=2)
    assert upstream.received["plain"][-1].body["n"] == 2  # the server makes its own choices
    sent = len(upstream.received["plain"])
    with pytest.raises(openai.BadRequestError) as caught:
        llm.chat.completions.create(model="plain", messages=hi, n=9)  # default cap: 8
    assert caught.value.body["param"] == "n"  # type: ignore[index]
    assert len(upstream.received["plain"]) == sent
