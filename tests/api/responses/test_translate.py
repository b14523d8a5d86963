"""Responses API ↔ chat translation without a server: requests (items, instructions, tools,
text formats, refused fields) into chat requests, chat answers into Response objects that the
`openai` SDK's own types validate, and chat streams into the event sequence the SDK expects (one
that breaks off, and one cut at shutdown, included)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from hearth.api.responses.protocol import ResponsesRequest
from hearth.api.responses.stream import ResponseEvents
from hearth.api.responses.translate import (
    chat_body,
    chat_messages,
    input_items,
    output_items,
    response_object,
)
from hearth.errors import InvalidRequest
from hearth.wire.base import parse_request
from hearth.wire.chat import ChatCompletionRequest
from hearth.wire.outcome import CompletionStream

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def request(**fields: Any) -> ResponsesRequest:
    body = {"model": "m", "input": "hi", **fields}
    return parse_request(ResponsesRequest, json.dumps(body).encode())


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    req = request(instructions="Be brief.", max_output_tokens=9, temperature=0.5, top_p=0.9)
    body = chat_body(req, input_items(req))
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert body["max_tokens"] == 9 and body["temperature"] == 0.5 and body["top_p"] == 0.9
    assert body["stream"] is False and "stream_options" not in body
    parse_request(ChatCompletionRequest, json.dumps(body).encode())  # a valid chat request


def test_items_rebuild_a_tool_conversation() -> None:
    req = request(
        input=[
            {"role": "developer", "content": "Use tools."},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "think"}]},
            {"type": "message", "role": "assistant", "content": "Checking."},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "Rain"}],
            },
        ]
    )
    items = input_items(req)
    assert [item["type"] for item in items][2] == "reasoning"
    assert all(item["id"] for item in items)
    assert chat_messages(items) == [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "Rain"},
    ]


def test_an_image_part_becomes_an_image_url_part() -> None:
    req = request(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ],
            }
        ]
    )
    [message] = chat_messages(input_items(req))
    assert message["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }


def test_tools_choice_format_and_reasoning_are_carried_over() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "enum": ["x", "y"]}}}
    req = request(
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "pick", "schema": schema, "strict": True}},
        reasoning={"effort": "low"},
        stream=True,
    )
    body = chat_body(req, input_items(req))
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER["parameters"],
                "strict": True,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "pick", "schema": schema, "strict": True},
    }
    assert body["reasoning_effort"] == "low"
    assert body["stream_options"] == {"include_usage": True}
    parse_request(ChatCompletionRequest, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": "NaN"}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"input": [{"type": "file_search_call", "id": "x"}]}, "input[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content[0]"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "function_call", "call_id": "c"}]}, "input[0].name"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": []}, "input"),
    ],
)
def test_bad_requests_name_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        request(**fields)
    assert caught.value.param == param, caught.value.message


def test_tool_choice_must_name_a_tool() -> None:
    with pytest.raises(InvalidRequest, match="'nope', which is not a tool"):
        request(tools=[WEATHER], tool_choice={"type": "function", "name": "nope"})
    with pytest.raises(InvalidRequest, match="requires 'tools'"):
        request(tool_choice="required")


def chat_answer(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }


def answer(req: ResponsesRequest, body: dict[str, Any]) -> Response:
    output, finish = output_items(body)
    status = "incomplete" if finish == "length" else "completed"
    reply = response_object(
        req,
        "resp_" + "0" * 32,
        1,
        status=status,
        output=output,
        usage=body["usage"],
        finish_reason=finish,
    )
    return Response.model_validate(reply)  # the SDK's type, validated


def test_an_answer_with_reasoning_text_and_calls_is_a_response() -> None:
    req = request(tools=[WEATHER], metadata={"a": "b"})
    message = {
        "role": "assistant",
        "reasoning_content": "Paris, so call the tool.",
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    response = answer(req, chat_answer(message, "tool_calls"))
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    reasoning, _, call = response.output
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == "Paris, so call the tool."
    assert response.output_text == "Let me check."
    assert call.type == "function_call" and call.call_id == "call_1"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.id and call.id.startswith("fc_")
    assert response.status == "completed" and response.metadata == {"a": "b"}
    assert response.tools[0].type == "function" and response.tools[0].name == "get_weather"
    usage = response.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (7, 5)
    assert usage.total_tokens == 12 and usage.input_tokens_details.cached_tokens == 3
    assert usage.output_tokens_details.reasoning_tokens == 2


def test_an_answer_cut_by_max_output_tokens_is_incomplete() -> None:
    response = answer(request(), chat_answer({"role": "assistant", "content": "Once"}, "length"))
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def test_an_empty_answer_is_an_empty_message() -> None:
    response = answer(request(), chat_answer({"role": "assistant", "content": None}))
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text == ""


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6}}\n\n'


async def relay(
    blocks: list[bytes], req: ResponsesRequest | None = None
) -> tuple[list[Any], list[dict[str, Any]]]:
    """The events for a chat stream (parsed by the SDK's own types), and what was stored."""
    stored: list[dict[str, Any]] = []

    async def source() -> AsyncIterator[bytes]:
        for block in blocks:
            yield block

    async def aclose() -> None:
        return None

    async def finish(body: dict[str, Any]) -> None:
        stored.append(body)

    events = ResponseEvents(req or request(stream=True), "resp_" + "1" * 32, 1, finish)
    outcome = CompletionStream(source(), "d", aclose)
    parsed = [parse_event(block) async for block in events.events(outcome)]
    return parsed, stored


def parse_event(block: bytes) -> Any:
    name, data = block.decode().strip().split("\n")
    event = EVENTS.validate_python(json.loads(data.removeprefix("data: ")))
    assert name == f"event: {event.type}"
    return event


async def test_a_stream_with_reasoning_text_and_a_call_gives_every_event_in_order() -> None:
    blocks = [
        chunk({"role": "assistant", "reasoning_content": "Hmm"}),
        chunk({"reasoning_content": ", Paris."}),
        chunk({"content": "Let me"}),
        chunk({"content": " check."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"ci'},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
        chunk({}, finish="tool_calls"),
        USAGE,
        b"data: [DONE]\n\n",
    ]
    events, stored = await relay(blocks, request(stream=True, tools=[WEATHER]))
    kinds = [event.type for event in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    done = events[-1].response
    assert [item.type for item in done.output] == ["reasoning", "message", "function_call"]
    assert done.output_text == "Let me check."
    assert json.loads(done.output[2].arguments) == {"city": "Paris"}
    assert done.usage.input_tokens == 4 and done.usage.output_tokens == 6
    assert [event.output_index for event in events if event.type.endswith("item.done")] == [
        0,
        1,
        2,
    ]
    # Stored before the client heard of it.
    assert len(stored) == 1 and stored[0]["id"] == done.id and stored[0]["status"] == "completed"


async def test_a_stream_cut_by_max_output_tokens_ends_incomplete() -> None:
    events, stored = await relay(
        [chunk({"content": "Once"}, finish="length"), USAGE, b"data: [DONE]\n\n"]
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert stored and stored[0]["status"] == "incomplete"


async def test_a_stream_that_breaks_off_ends_with_response_failed() -> None:
    error = b'data: {"error": {"message": "upstream went away", "code": 502}}\n\n'
    events, stored = await relay([chunk({"content": "Half"}), error, b"data: [DONE]\n\n"])
    kinds = [event.type for event in events]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.message == "upstream went away"
    assert failed.error.code == "server_error"
    assert failed.output[0].status == "incomplete" and failed.output_text == "Half"
    assert stored == []  # a failed answer is not stored


async def test_a_failure_keeps_a_rate_limit_code_and_the_param() -> None:
    error = {"message": "too many", "code": "rate_limit_exceeded", "param": "model"}
    events, _ = await relay(
        [chunk({"content": "A"}), f"data: {json.dumps({'error': error})}\n\n".encode()]
    )
    failed = events[-1].response
    assert failed.error.code == "rate_limit_exceeded" and failed.error.param == "model"


async def test_the_shutdown_event_continues_the_sequence() -> None:
    async def finish(body: dict[str, Any]) -> None:
        raise AssertionError("a cut stream is not stored")

    events = ResponseEvents(request(stream=True), "resp_" + "2" * 32, 1, finish)

    async def source() -> AsyncIterator[bytes]:
        yield chunk({"content": "Hel"})
        yield chunk({"content": "lo"})
        yield USAGE  # Hearth stops before the rest

    async def aclose() -> None:
        return None

    stream = events.events(CompletionStream(source(), "d", aclose))
    sent = []
    async for block in stream:
        sent.append(parse_event(block))
        if sent[-1].type == "response.output_text.delta" and sent[-1].delta == "lo":
            break
    await stream.aclose()  # what the relay does when the drain time runs out
    cut = parse_event(events.cut_event())
    assert cut.type == "response.failed" and cut.sequence_number == sent[-1].sequence_number + 1
    assert cut.response.id == sent[0].response.id
    assert cut.response.output_text == "Hello" and cut.response.error is not None
