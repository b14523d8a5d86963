"""Forced tool calls as a JSON schema for the engine, and the engine's JSON read back as a tool
call, whole and streamed (routing/constrained.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hearth.engines.base import Capabilities
from hearth.errors import InvalidRequest, UpstreamStatusError
from hearth.routing.constrained import ForcedCall, constrain
from hearth.routing.streams import OpenedStream

SCHEMA = Capabilities(chat=True, tools=True, json_schema=True)
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city", "unit"],
}
TOOLS = [
    {"type": "function", "function": {"name": "weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "ping"}},
]


def fields(**more: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, **more}


def test_required_becomes_one_of_the_tools_calls() -> None:
    out, forced = constrain(fields(tool_choice="required"), SCHEMA)
    assert forced is not None and forced.names == ("weather", "ping")
    assert out["tool_choice"] == "none" and out["tools"] == TOOLS  # still in the prompt
    alternatives = out["json_schema"]["anyOf"]
    assert [a["properties"]["name"] for a in alternatives] == [
        {"const": "weather"},
        {"const": "ping"},
    ]
    assert alternatives[0]["properties"]["arguments"] == WEATHER
    assert alternatives[1]["properties"]["arguments"] == {"type": "object", "properties": {}}
    assert list(alternatives[0]["properties"]) == ["name", "arguments"]  # name streams first


def test_a_named_tool_is_the_only_call() -> None:
    choice = {"type": "function", "function": {"name": "weather"}}
    out, forced = constrain(fields(tool_choice=choice, response_format={"type": "text"}), SCHEMA)
    assert forced is not None and forced.names == ("weather",)
    assert out["json_schema"]["properties"]["name"] == {"const": "weather"}
    assert "response_format" not in out
    assert forced.param == "tools[0].function.parameters"


def test_a_named_tool_that_is_not_there_is_a_400() -> None:
    choice = {"type": "function", "function": {"name": "nope"}}
    with pytest.raises(InvalidRequest) as caught:
        constrain(fields(tool_choice=choice), SCHEMA)
    assert caught.value.param == "tool_choice"


@pytest.mark.parametrize("choice", [None, "auto", "none"])
def test_other_choices_and_other_engines_are_left_alone(choice: str | None) -> None:
    given = fields(tool_choice=choice)
    assert constrain(given, SCHEMA) == (given, None)
    required = fields(tool_choice="required")
    assert constrain(required, Capabilities(chat=True, tools=True)) == (required, None)


def test_schemas_the_engine_cannot_fetch_are_a_400_naming_the_field() -> None:
    remote = {"type": "object", "properties": {"a": {"$ref": "https://x.test/s.json"}}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": remote}}]
    with pytest.raises(InvalidRequest) as caught:
        constrain(fields(tools=tools, tool_choice="required"), SCHEMA)
    assert caught.value.param == "tools[0].function.parameters"
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": "not a schema"}}
    with pytest.raises(InvalidRequest) as caught:
        constrain(fields(response_format=fmt), SCHEMA)
    assert caught.value.param == "response_format.json_schema.schema"


def test_the_engines_refusal_of_a_schema_names_the_field() -> None:
    forced = ForcedCall(("f",), "tools[0].function.parameters")
    refused = UpstreamStatusError(400, "JSON schema conversion failed:\nUnresolved $ref #/x")
    mapped = forced.schema_error(refused)
    assert mapped is not None and mapped.param == "tools[0].function.parameters"
    assert "Unresolved $ref" in mapped.message
    assert forced.schema_error(UpstreamStatusError(400, "context is full")) is None


def answer(content: str, finish: str = "stop") -> dict[str, Any]:
    return {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
    }


def test_a_whole_answer_becomes_a_tool_call() -> None:
    forced = ForcedCall(("weather", "ping"), "tools")
    body = forced.answer(
        answer('  {"name": "weather", "arguments": {"city": "Oslo", "unit": "c"}}')
    )
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo", "unit": "c"}
    fenced = forced.answer(answer('```json\n{"name": "ping", "arguments": {}}\n```'))
    assert fenced["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "ping"


def test_a_cut_answer_is_a_400_naming_max_tokens() -> None:
    forced = ForcedCall(("weather",), "tools")
    with pytest.raises(InvalidRequest) as caught:
        forced.answer(answer('{"name": "weather", "argum', finish="length"))
    assert caught.value.param == "max_tokens" and caught.value.code == "tool_call_incomplete"
    with pytest.raises(InvalidRequest) as caught:
        forced.answer(answer("plain text"))
    assert caught.value.code == "tool_call_invalid"


def event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def chunk(content: str | None = None, finish: str | None = None, role: bool = False) -> bytes:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None or role:
        delta["content"] = content
    return event({"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


USAGE = event({"id": "c1", "choices": [], "usage": {"completion_tokens": 9}})
DONE = b"data: [DONE]\n\n"


async def streamed(forced: ForcedCall, blocks: list[bytes]) -> list[bytes]:
    async def rest() -> AsyncIterator[bytes]:
        for block in blocks[1:]:
            yield block

    opened = forced.stream(OpenedStream(blocks[0], rest()))
    out = [opened.first]
    async for block in opened.rest:
        out.append(block)
    return out


def deltas(blocks: list[bytes]) -> list[dict[str, Any]]:
    found = []
    for line in b"".join(blocks).split(b"\n\n"):
        if line.startswith(b"data: {"):
            found.append(json.loads(line[6:]))
    return found


async def test_a_stream_becomes_tool_call_deltas() -> None:
    pieces = ['{"name', '": "weath', 'er", "arguments": ', '{"city": "O', 'slo", "unit": "c"}', "}"]
    blocks = [chunk(role=True)] + [chunk(p) for p in pieces]
    blocks += [chunk(finish="stop") + USAGE + DONE]
    out = await streamed(ForcedCall(("weather",), "tools"), blocks)
    chunks = deltas(out)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    groups = [c["choices"][0]["delta"].get("tool_calls") for c in chunks[1:] if c["choices"]]
    calls = [call for group in groups if group for call in group]
    head = calls[0]
    assert head["index"] == 0 and head["id"].startswith("call_") and head["type"] == "function"
    assert head["function"] == {"name": "weather", "arguments": ""}
    arguments = "".join(c["function"]["arguments"] for c in calls[1:])
    assert json.loads(arguments) == {"city": "Oslo", "unit": "c"}
    assert len(calls) == 3  # the name, then the arguments in fragments as generated
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1]["usage"] == {"completion_tokens": 9}  # unchanged
    assert out[-1].endswith(DONE)
    assert not any("content" in (c["choices"] or [{}])[0].get("delta", {}) for c in chunks[1:])


async def test_a_cut_stream_ends_with_an_error_after_its_usage() -> None:
    blocks = [chunk(role=True), chunk('{"name": "weather", "arguments": {"ci')]
    blocks += [chunk(finish="length") + USAGE + DONE]
    forced = ForcedCall(("weather",), "tools")
    with pytest.raises(InvalidRequest) as caught:
        await streamed(forced, blocks)
    assert caught.value.param == "max_tokens"


async def test_a_cut_streams_usage_goes_out_before_the_error() -> None:
    got: list[bytes] = []

    async def rest() -> AsyncIterator[bytes]:
        yield chunk('{"name": "weather", "arguments": {"ci')
        yield chunk(finish="length") + USAGE + DONE

    opened = ForcedCall(("weather",), "tools").stream(OpenedStream(chunk(role=True), rest()))
    with pytest.raises(InvalidRequest):
        async for block in opened.rest:
            got.append(block)
    chunks = deltas(got)
    assert chunks[-1]["usage"] == {"completion_tokens": 9}
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
