"""Reading usage out of relayed stream chunks, and counting output events when none comes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hearth.deployments.deployment import RemoteDeployment, Route
from hearth.engines.base import Capabilities
from hearth.routing.request import RoutedRequest, Trace
from hearth.routing.streams import OpenedStream, _note_usage, _output_events, relay

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def event(data: dict[str, Any], end: bytes = b"\n\n") -> bytes:
    return b"data: " + json.dumps(data).encode() + end


def delta(content: str | None) -> bytes:
    return event({"choices": [{"index": 0, "delta": {"content": content}}]})


def request() -> RoutedRequest:
    return RoutedRequest(
        route=Route(name="m", targets=[]),
        path="/chat/completions",
        fields={},
        capability="chat",
        request_id="r",
        trace=Trace(started=0.0),
    )


USAGE_ONLY = event({"choices": [], "usage": USAGE})
DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize("end", [b"\n\n", b"\r\n\r\n"])
def test_a_usage_only_event_is_noted_and_dropped_when_the_client_did_not_ask(end: bytes) -> None:
    head = delta("Hi") + event({"choices": [{"index": 0, "delta": {"content": " there"}}]}, end)
    usage_only = event({"choices": [], "usage": USAGE}, end)
    routed = request()
    kept = _note_usage(head + usage_only + DONE, routed, hide_usage=True)
    assert kept == head + DONE
    assert routed.trace.usage == USAGE


def test_a_usage_event_is_kept_when_the_client_asked_for_it() -> None:
    chunk = delta("Hi") + USAGE_ONLY + DONE
    routed = request()
    assert _note_usage(chunk, routed, hide_usage=False) == chunk
    assert routed.trace.usage == USAGE


def test_usage_riding_on_a_content_event_is_never_dropped() -> None:
    both = event({"choices": [{"index": 0, "delta": {"content": "x"}}], "usage": USAGE})
    routed = request()
    assert _note_usage(both + DONE, routed, hide_usage=True) == both + DONE
    assert routed.trace.usage == USAGE


def test_the_word_usage_in_generated_text_is_not_taken_for_usage() -> None:
    chunk = delta('the "usage" field') + event({"choices": [], "usage": "none"}) + DONE
    routed = request()
    assert _note_usage(chunk, routed, hide_usage=True) == chunk
    assert routed.trace.usage is None


def test_a_usage_event_alone_in_its_chunk() -> None:
    routed = request()
    assert _note_usage(USAGE_ONLY, routed, hide_usage=True) == b""
    assert routed.trace.usage == USAGE


def test_output_events_count_text_and_tool_arguments_not_empty_deltas() -> None:
    role = event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    tool = event(
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "{"}}]}}]}
    )
    finish = event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunk = role + delta("a") + delta('say "content"') + delta(None) + tool + finish + DONE
    assert _output_events(chunk) == 3
    assert _output_events(role + finish) == 0


async def _relayed(chunks: list[bytes], read: int, request: RoutedRequest) -> None:
    """Relay `chunks`, read `read` of them, then leave as a client that hangs up does."""

    async def rest() -> AsyncIterator[bytes]:
        for chunk in chunks[1:]:
            yield chunk

    opened = OpenedStream(chunks[0], rest())
    deployment = RemoteDeployment("d", "http://x/v1", "m", Capabilities(chat=True))
    stream = relay(opened, request, deployment, contextlib.AsyncExitStack(), None)
    for _ in range(read):
        await anext(stream)
    await stream.aclose()


@pytest.mark.parametrize("end", [b"\n\n", b"\r\n\r\n"])
async def test_a_client_leaving_after_the_end_marker_had_its_whole_answer(end: bytes) -> None:
    routed = request()
    await _relayed([delta("Hi"), b"data: [DONE]" + end], read=2, request=routed)
    assert routed.trace.status == 200  # not recorded as a client that left early


async def test_a_client_leaving_before_the_end_marker_is_not_marked_delivered() -> None:
    routed = request()
    await _relayed([delta("Hi"), delta(" there"), DONE], read=1, request=routed)
    assert routed.trace.status is None  # the edge records why it ended (499 or 503)
