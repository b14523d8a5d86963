"""Messages API ↔ OpenAI translation without a server: requests (system, blocks, tools,
tool_use/tool_result turns), answers, and a stream (one that breaks off included) as events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hearth.api.anthropic.protocol import MessagesRequest, error_body
from hearth.api.anthropic.stream import message_events
from hearth.api.anthropic.translate import chat_body, conversation, message_reply
from hearth.errors import InvalidRequest
from hearth.routing.tokens import estimate_tokens
from hearth.wire.base import parse_request
from hearth.wire.outcome import CompletionStream

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}

PIXEL = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWj"
    "R9awAAAABJRU5ErkJggg=="
)


def request(**fields: Any) -> MessagesRequest:
    body = {"model": "m", "max_tokens": 16, **fields}
    return parse_request(MessagesRequest, json.dumps(body).encode())


def test_a_conversation_with_tool_use_and_results_goes_in() -> None:
    req = request(
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "...", "signature": "x"},
                    {"type": "text", "text": "Let me look."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "text", "text": "And tomorrow?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                    },
                ],
            },
        ],
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        stop_sequences=["\n\n"],
        temperature=0.5,
        top_k=10,
        metadata={"user_id": "u1"},
    )
    body = chat_body(req, "m")
    assert body["messages"] == [
        {"role": "system", "content": "Be brief.\n\nBe kind."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And tomorrow?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
            ],
        },
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is False
    assert body["stop"] == ["\n\n"]
    assert (body["temperature"], body["top_k"], body["user"], body["max_tokens"]) == (
        0.5,
        10,
        "u1",
        16,
    )


def test_tool_choice_forms() -> None:
    named = conversation(
        request(
            messages=[{"role": "user", "content": "x"}],
            tools=[WEATHER],
            tool_choice={"type": "tool", "name": "get_weather"},
        )
    )
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    auto = conversation(
        request(
            messages=[{"role": "user", "content": "x"}],
            tools=[WEATHER],
            tool_choice={"type": "auto"},
        )
    )
    assert auto["tool_choice"] == "auto"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({"tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, ""),
        ({"temperature": 1.5}, "temperature"),
    ],
)
def test_bad_requests_name_the_field(fields: dict[str, Any], param: str) -> None:
    body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], **fields}
    with pytest.raises(InvalidRequest) as caught:
        parse_request(MessagesRequest, json.dumps(body).encode())
    assert (caught.value.param or "") == param


def test_a_tool_result_in_an_assistant_turn_is_refused() -> None:
    req = request(
        messages=[
            {
                "role": "assistant",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}],
            }
        ]
    )
    with pytest.raises(InvalidRequest, match=r"messages\[0\]\.content\[0\]"):
        chat_body(req, "m")


def test_answers_become_content_blocks() -> None:
    req = request(messages=[{"role": "user", "content": "x"}])
    body = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7},
    }
    reply = message_reply(body, "m", req)
    assert reply["type"] == "message" and reply["role"] == "assistant"
    assert reply["id"].startswith("msg_")
    assert reply["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert reply["stop_reason"] == "tool_use" and reply["stop_sequence"] is None
    assert reply["usage"] == {"input_tokens": 12, "output_tokens": 7}
    for finish, reason in (("stop", "end_turn"), ("length", "max_tokens")):
        plain = {"choices": [{"message": {"content": "x"}, "finish_reason": finish}]}
        assert message_reply(plain, "m", req)["stop_reason"] == reason
    # An engine that names the stop string it met (vLLM) gives stop_sequence.
    stopped = request(messages=[{"role": "user", "content": "x"}], stop_sequences=["END"])
    vllm = {
        "choices": [{"message": {"content": "x"}, "finish_reason": "stop", "stop_reason": "END"}]
    }
    reply = message_reply(vllm, "m", stopped)
    assert (reply["stop_reason"], reply["stop_sequence"]) == ("stop_sequence", "END")


def test_error_shape_follows_the_status() -> None:
    body = {"error": {"message": "nope", "type": "x", "param": None, "code": None}}
    assert error_body(404, body) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "nope"},
    }
    assert error_body(400, body)["error"]["type"] == "invalid_request_error"
    assert error_body(503, body)["error"]["type"] == "overloaded_error"
    assert error_body(502, body)["error"]["type"] == "api_error"


def test_the_estimate_counts_messages_and_tools() -> None:
    small = estimate_tokens({"messages": [{"role": "user", "content": "hi"}]})
    large = estimate_tokens(
        {"messages": [{"role": "user", "content": "hi " * 400}], "tools": [WEATHER]}
    )
    assert 0 < small < large


def _stream(*chunks: dict[str, Any] | str) -> CompletionStream:
    async def events() -> AsyncIterator[bytes]:
        for chunk in chunks:
            data = chunk if isinstance(chunk, str) else json.dumps(chunk)
            yield f"data: {data}\n\n".encode()

    async def aclose() -> None:
        return None

    return CompletionStream(events(), "m", aclose)


async def _events(stream: CompletionStream) -> list[tuple[str, dict[str, Any]]]:
    req = request(messages=[{"role": "user", "content": "x"}], stream=True)
    out = []
    async for raw in message_events(stream, "m", req):
        name, data = raw.decode().removesuffix("\n\n").split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        out.append((payload["type"], payload))
    return out


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


async def test_a_stream_becomes_message_events() -> None:
    events = await _events(
        _stream(
            delta(role="assistant", content=""),
            delta(content="Let me"),
            delta(content=" check."),
            delta(tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]),
            delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}]),
            delta(tool_calls=[{"index": 0, "function": {"arguments": ' "Oslo"}'}}]),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            {"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9}},
            "[DONE]",
        )
    )  # fmt: skip
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["role"] == "assistant"
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "Let me"}
    assert events[5][1]["index"] == 1
    assert events[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {},
    }
    partial = "".join(e[1]["delta"]["partial_json"] for e in events[6:8])
    assert json.loads(partial) == {"city": "Oslo"}
    assert events[9][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[9][1]["usage"] == {"input_tokens": 20, "output_tokens": 9}


async def test_a_stream_that_breaks_off_ends_with_an_error_event() -> None:
    events = await _events(
        _stream(
            delta(content="Hi"),
            {"error": {"message": "the engine crashed", "type": "server_error", "code": None}},
            "[DONE]",
        )
    )
    names = [name for name, _ in events]
    assert names[-1] == "error" and "message_stop" not in names
    assert events[-1][1]["error"] == {"type": "api_error", "message": "the engine crashed"}
