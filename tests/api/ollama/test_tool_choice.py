"""/api/chat with Hearth's `tool_choice` extension (a forced call), `format` schemas that hold
and `think`, through a real `hearth serve` with the real engine and the `ollama` SDK; and the
translation alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import ollama
import pytest

from hearth.api.ollama.protocol import ChatRequest
from hearth.api.ollama.reply import Timer, chat_reply
from hearth.api.ollama.translate import chat_body
from hearth.wire.base import parse_request
from support.hearth_server import HearthServer
from support.tool_schemas import BOOKING, SCHEMAS, WEATHER

MODEL = "gemma-3-270m"
TOOLS: Any = [
    {"type": "function", "function": {"name": name, "description": name, "parameters": schema}}
    for name, schema in SCHEMAS.items()
]
ASK: Any = [{"role": "user", "content": "Book a table for four at Luigi's, outside please."}]


@pytest.fixture
def client(hearth: HearthServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=hearth.base_url) as client:
        yield client


def test_required_tool_choice_gives_a_call(hearth: HearthServer) -> None:
    body = {
        "model": MODEL,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": "required",
        "stream": False,
        "options": {"num_predict": 120, "seed": 3},
    }
    reply = httpx.post(f"{hearth.base_url}/api/chat", json=body, timeout=300).json()
    (call,) = reply["message"]["tool_calls"]
    name = call["function"]["name"]
    jsonschema.validate(call["function"]["arguments"], SCHEMAS[name])
    assert reply["done"] is True and reply["message"]["content"] == ""


def test_a_named_tool_choice_streams_one_whole_call(hearth: HearthServer) -> None:
    # The ollama SDK sends no fields it does not know, so the extension goes over plain HTTP.
    body = {
        "model": MODEL,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "book_table"}},
        "options": {"num_predict": 120, "seed": 3},
    }
    lines = []
    with httpx.stream("POST", f"{hearth.base_url}/api/chat", json=body, timeout=300) as reply:
        lines = [json.loads(line) for line in reply.iter_lines() if line]
    calls = [call for line in lines for call in line["message"].get("tool_calls") or []]
    (call,) = calls
    assert call["function"]["name"] == "book_table"
    jsonschema.validate(call["function"]["arguments"], BOOKING)
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] > 0


def test_format_schema_holds(client: ollama.Client) -> None:
    reply = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        format=WEATHER,
        options={"num_predict": 120, "seed": 2},
        think=False,
    )
    jsonschema.validate(json.loads(reply.message.content or ""), WEATHER)


def request(**fields: Any) -> ChatRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **fields}
    return parse_request(ChatRequest, json.dumps(body).encode())


def test_the_extension_and_think_translate() -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    body = chat_body(request(tools=TOOLS, tool_choice=named), "m")
    assert body["tool_choice"] == named
    assert chat_body(request(tools=TOOLS, tool_choice="required"), "m")["tool_choice"] == (
        "required"
    )
    assert "tool_choice" not in chat_body(request(tools=TOOLS), "m")
    assert chat_body(request(think=False), "m")["reasoning_effort"] == "none"
    assert chat_body(request(think="high"), "m")["reasoning_effort"] == "high"
    assert "reasoning_effort" not in chat_body(request(think=True), "m")


def test_tool_choice_needs_tools() -> None:
    with pytest.raises(Exception, match="requires 'tools'"):
        request(tool_choice="required")


def test_reasoning_is_the_messages_thinking() -> None:
    body = {
        "choices": [
            {
                "message": {"role": "assistant", "content": "4", "reasoning_content": "2+2"},
                "finish_reason": "stop",
            }
        ]
    }
    reply = chat_reply(body, "m", Timer(started=0.0))
    assert reply["message"]["thinking"] == "2+2" and reply["message"]["content"] == "4"
