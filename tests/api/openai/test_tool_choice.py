"""Forced tool calls and JSON schemas that hold, through a real `hearth serve` and the real
engine with the bundled base model (which calls no tool by itself), with the openai SDK."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from support.hearth_server import HearthServer
from support.tool_schemas import SCHEMAS

MODEL = "gemma-3-270m"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": name, "description": f"{name} tool", "parameters": schema},
    }
    for name, schema in SCHEMAS.items()
]
ASK = [{"role": "user", "content": "Book a table for four at Luigi's, outside please."}]


def named(name: str) -> Any:
    return {"type": "function", "function": {"name": name}}


def check_call(name: str, arguments: str) -> dict[str, Any]:
    parsed = json.loads(arguments)
    jsonschema.validate(parsed, SCHEMAS[name])
    return parsed


@pytest.mark.parametrize("choice", ["required", "book_table", "get_weather"])
def test_a_forced_call_is_a_tool_call_whose_arguments_validate(
    hearth: HearthServer, choice: str
) -> None:
    reply = hearth.openai().chat.completions.create(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        tools=TOOLS,
        tool_choice="required" if choice == "required" else named(choice),
        max_tokens=120,
        seed=3,
    )
    (answer,) = reply.choices
    assert answer.finish_reason == "tool_calls"
    assert answer.message.content is None
    (call,) = answer.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    name = call.function.name  # type: ignore[union-attr]
    assert name in SCHEMAS if choice == "required" else name == choice
    check_call(name, call.function.arguments)  # type: ignore[union-attr]
    assert reply.usage is not None and reply.usage.completion_tokens > 0


@pytest.mark.parametrize("choice", ["required", "book_table"])
def test_a_forced_call_streams_as_tool_call_deltas(hearth: HearthServer, choice: str) -> None:
    stream = hearth.openai().chat.completions.create(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        tools=TOOLS,
        tool_choice="required" if choice == "required" else named(choice),
        max_tokens=120,
        seed=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    heads, fragments, finishes, usage = [], [], [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for part in chunk.choices:
            assert not part.delta.content
            for call in part.delta.tool_calls or []:
                assert call.index == 0
                if call.id is not None:
                    heads.append(call)
                fragments.append(call.function.arguments or "")  # type: ignore[union-attr]
            if part.finish_reason:
                finishes.append(part.finish_reason)
    (head,) = heads
    assert head.id.startswith("call_") and head.type == "function"  # type: ignore[union-attr]
    name = head.function.name  # type: ignore[union-attr]
    assert name in SCHEMAS if choice == "required" else name == choice
    assert len([f for f in fragments if f]) > 1  # arguments streamed as they were written
    check_call(name, "".join(fragments))
    assert finishes == ["tool_calls"]
    assert usage is not None and usage.completion_tokens > 0


def test_a_call_cut_by_max_tokens_is_a_400_naming_it(hearth: HearthServer) -> None:
    llm = hearth.openai()
    with pytest.raises(openai.BadRequestError) as caught:
        llm.chat.completions.create(
            model=MODEL,
            messages=ASK,  # type: ignore[arg-type]
            tools=TOOLS,
            tool_choice=named("book_table"),
            max_tokens=6,
        )
    assert caught.value.body["param"] == "max_tokens"  # type: ignore[index]
    assert "max_tokens" in caught.value.message
    stream = llm.chat.completions.create(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        tools=TOOLS,
        tool_choice=named("book_table"),
        max_tokens=6,
        stream=True,
    )
    with pytest.raises(openai.APIError, match="max_tokens"):
        for _ in stream:
            pass


def test_auto_and_none_are_left_to_the_model(hearth: HearthServer) -> None:
    for choice in ("auto", "none"):
        reply = hearth.openai().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say hello."}],
            tools=TOOLS,
            tool_choice=choice,  # type: ignore[arg-type]
            max_tokens=8,
            seed=1,
        )
        assert reply.choices[0].finish_reason in {"stop", "length"}


RECIPE = {
    "type": "object",
    "properties": {
        "dish": {"type": "string", "maxLength": 30},
        "course": {"type": "string", "enum": ["starter", "main", "dessert"]},
        "timing": {
            "type": "object",
            "properties": {
                "minutes": {"type": "integer", "minimum": 1, "maximum": 240},
                "oven": {"type": "boolean"},
            },
            "required": ["minutes", "oven"],
            "additionalProperties": False,
        },
    },
    "required": ["dish", "course", "timing"],
    "additionalProperties": False,
}
FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "recipe", "schema": RECIPE}}
RECIPE_ASK: Any = [{"role": "user", "content": "Describe a dish."}]


# Seeds 3 and 5 wandered in tabs and newlines until the token limit before Hearth banned them
# while the output is held to a schema (engines/llama_cpp/launcher.py, JSON_GAPS).
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_response_format_json_schema_holds(hearth: HearthServer, seed: int) -> None:
    reply = hearth.openai().chat.completions.create(
        model=MODEL, messages=RECIPE_ASK, response_format=FORMAT, max_tokens=150, seed=seed
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), RECIPE)


def test_response_format_json_schema_holds_streamed(hearth: HearthServer) -> None:
    stream = hearth.openai().chat.completions.create(
        model=MODEL,
        messages=RECIPE_ASK,
        response_format=FORMAT,
        max_tokens=150,
        seed=5,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), RECIPE)


def test_json_object_is_json(hearth: HearthServer) -> None:
    reply = hearth.openai().chat.completions.create(
        model=MODEL,
        messages=RECIPE_ASK,
        response_format={"type": "json_object"},
        max_tokens=60,
        seed=2,
    )
    content = reply.choices[0].message.content or ""
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:
        assert content.lstrip().startswith("{")


UNRESOLVED: Any = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}


def test_a_schema_the_engine_cannot_compile_is_a_400_naming_the_field(
    hearth: HearthServer,
) -> None:
    def refused(**fields: Any) -> dict[str, Any]:
        body = {"model": MODEL, "messages": RECIPE_ASK, "max_tokens": 8, **fields}
        reply = httpx.post(f"{hearth.base_url}/v1/chat/completions", json=body, timeout=60)
        assert reply.status_code == 400, reply.text
        error: dict[str, Any] = reply.json()["error"]
        assert error["type"] == "invalid_request_error"
        return error

    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": UNRESOLVED}}
    assert refused(response_format=fmt)["param"] == "response_format"
    tools = [TOOLS[0], {"type": "function", "function": {"name": "f", "parameters": UNRESOLVED}}]
    error = refused(tools=tools, tool_choice=named("f"))
    assert error["param"] == "tools[1].function.parameters"
    remote = {"type": "object", "properties": {"a": {"$ref": "https://schemas.test/a.json"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": remote}}
    assert refused(response_format=fmt)["param"] == "response_format.json_schema.schema"
    assert refused(tools=TOOLS, tool_choice=named("nope"))["param"] == "tool_choice"
    # The engine is fine afterwards.
    reply = hearth.openai().chat.completions.create(model=MODEL, messages=RECIPE_ASK, max_tokens=2)
    assert reply.choices[0].finish_reason == "length"
