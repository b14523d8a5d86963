"""Forced tool use (`tool_choice` any and tool), structured outputs (`output_config.format`),
fields Hearth refuses rather than ignores, and reasoning as thinking blocks: through a real
`hearth serve` with the real engine and the `anthropic` SDK, and the translation alone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import jsonschema
import pytest

from hearth.api.anthropic.protocol import MessagesRequest
from hearth.api.anthropic.stream import message_events
from hearth.api.anthropic.translate import chat_body, message_reply
from hearth.errors import InvalidRequest
from hearth.wire.base import parse_request
from hearth.wire.outcome import CompletionStream
from support.hearth_server import HearthServer
from support.tool_schemas import SCHEMAS, WEATHER

MODEL = "gemma-3-270m"
TOOLS: Any = [
    {"name": name, "description": f"{name} tool", "input_schema": schema}
    for name, schema in SCHEMAS.items()
]
ASK: Any = [{"role": "user", "content": "Book a table for four at Luigi's, outside please."}]


@pytest.fixture
def client(hearth: HearthServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=hearth.base_url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "book_table"}])
def test_forced_tool_use_validates(client: anthropic.Anthropic, choice: Any) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=120,
        messages=ASK,
        tools=TOOLS,
        tool_choice=choice,
        extra_body={"temperature": 0},  # greedy: a base model can wander in JSON's whitespace
    )
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use" and block.id
    assert block.name in SCHEMAS if choice["type"] == "any" else block.name == "book_table"
    jsonschema.validate(block.input, SCHEMAS[block.name])


def test_forced_tool_use_streams(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=120,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_body={"temperature": 0},
    ) as stream:
        deltas = [e for e in stream if e.type == "content_block_delta"]
        message = stream.get_final_message()
    assert deltas and all(e.delta.type == "input_json_delta" for e in deltas)
    (block,) = message.content
    assert block.type == "tool_use" and block.name == "get_weather"
    jsonschema.validate(block.input, WEATHER)
    assert message.stop_reason == "tool_use"


RECIPE = {
    "type": "object",
    "properties": {
        "dish": {"type": "string", "maxLength": 30},
        "course": {"type": "string", "enum": ["starter", "main", "dessert"]},
        "timing": {
            "type": "object",
            "properties": {"minutes": {"type": "integer", "minimum": 1, "maximum": 240}},
            "required": ["minutes"],
            "additionalProperties": False,
        },
    },
    "required": ["dish", "course", "timing"],
    "additionalProperties": False,
}


def test_output_config_format_holds(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=150,
        messages=[{"role": "user", "content": "Describe a dish."}],
        output_config={"format": {"type": "json_schema", "schema": RECIPE}},
        extra_body={"temperature": 0},  # greedy: the same answer every run
    )
    (block,) = message.content
    assert block.type == "text"
    jsonschema.validate(json.loads(block.text), RECIPE)


@pytest.mark.parametrize("field", ["mcp_servers", "container", "context_management"])
def test_fields_that_change_the_answer_are_refused(client: anthropic.Anthropic, field: str) -> None:
    value: Any = [{"type": "url", "url": "https://mcp.test", "name": "x"}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model=MODEL,
            max_tokens=8,
            messages=[{"role": "user", "content": "Hi"}],
            extra_body={field: value if field == "mcp_servers" else {"id": "x"}},
        )
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert field in caught.value.message


def request(**fields: Any) -> MessagesRequest:
    body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}
    return parse_request(MessagesRequest, json.dumps({**body, **fields}).encode())


def test_output_config_and_its_beta_name_become_response_format() -> None:
    fmt = {"type": "json_schema", "schema": RECIPE}
    for given in ({"output_config": {"format": fmt}}, {"output_format": fmt}):
        body = chat_body(request(**given), "m")
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == RECIPE
    effort = chat_body(request(output_config={"effort": "max"}), "m")
    assert effort["reasoning_effort"] == "high" and "response_format" not in effort
    assert "response_format" not in chat_body(request(), "m")


def test_reasoning_becomes_a_thinking_block() -> None:
    body = {
        "choices": [
            {
                "message": {"role": "assistant", "content": "4", "reasoning_content": "2+2"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    reply = message_reply(body, "m", request())
    assert [b["type"] for b in reply["content"]] == ["thinking", "text"]
    assert reply["content"][0]["thinking"] == "2+2"


async def test_streamed_reasoning_becomes_thinking_deltas() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        yield chunk({"reasoning_content": "two"})
        yield chunk({"reasoning_content": " plus two"})
        yield chunk({"content": "4"})
        yield chunk({}, "stop") + b"data: [DONE]\n\n"

    async def nothing() -> None:
        return None

    outcome = CompletionStream(events(), "d", nothing)
    out = [e async for e in message_events(outcome, "m", request())]
    parsed = [json.loads(e.split(b"data: ", 1)[1]) for e in out]
    starts = [p["content_block"]["type"] for p in parsed if p["type"] == "content_block_start"]
    assert starts == ["thinking", "text"]
    thinking = [
        p["delta"]["thinking"]
        for p in parsed
        if p["type"] == "content_block_delta" and p["delta"]["type"] == "thinking_delta"
    ]
    assert "".join(thinking) == "two plus two"


def test_only_the_fields_that_change_the_answer_are_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        request(mcp_servers=[{"type": "url", "url": "https://mcp.test"}]).check_supported()
    assert caught.value.param == "mcp_servers"
    request(service_tier="auto", thinking={"type": "disabled"}).check_supported()
