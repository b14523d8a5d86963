"""The Responses API through a real `hearth serve` and the real engine with the bundled model,
with the real `openai` SDK: text answers, a JSON schema that holds, a forced function call and
the turn that answers it through previous_response_id, every stream event in order, and the
stored response retrieved, listed and deleted."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

from support.hearth_server import HearthServer
from support.tool_schemas import WEATHER as WEATHER_SCHEMA

MODEL = "gemma-3-270m"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": WEATHER_SCHEMA,
    "strict": True,
}
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


@pytest.fixture
def client(hearth: HearthServer) -> openai.OpenAI:
    return hearth.openai()


def test_a_text_answer(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        instructions="You are terse.",
        input="Name a colour.",
        max_output_tokens=8,
        temperature=0,
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.model == MODEL and response.status in {"completed", "incomplete"}
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.output_text
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and 0 < usage.output_tokens <= 8
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_max_output_tokens_makes_it_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input="Tell me a long story about a dragon.", max_output_tokens=3
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 3


@pytest.mark.parametrize("seed", [1, 2])
def test_a_json_schema_text_format_holds(client: openai.OpenAI, seed: int) -> None:
    response = client.responses.create(
        model=MODEL,
        input="Describe a dish.",
        text={"format": {"type": "json_schema", "name": "recipe", "schema": RECIPE}},
        max_output_tokens=150,
        extra_body={"seed": seed},
    )
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), RECIPE)
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"


def test_a_required_function_call_then_its_output_is_answered(client: openai.OpenAI) -> None:
    called = client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=120,
        extra_body={"seed": 3},
    )
    calls = [item for item in called.output if item.type == "function_call"]
    assert len(calls) == 1, called.output
    [call] = calls
    assert call.name == "get_weather" and call.call_id and call.id and call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), WEATHER_SCHEMA)
    assert called.tool_choice == "required" and called.tools[0].name == "get_weather"  # type: ignore[union-attr]
    answered = client.responses.create(
        model=MODEL,
        previous_response_id=called.id,
        input=[
            {
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": json.dumps({"temperature": 24, "sky": "sunny"}),
            }
        ],
        tools=[WEATHER],
        tool_choice="none",  # answer in words now
        max_output_tokens=40,
        extra_body={"seed": 5},
    )
    assert answered.previous_response_id == called.id
    assert answered.status in {"completed", "incomplete"}
    assert [item.type for item in answered.output] == ["message"]
    assert answered.output_text, answered.output
    # The earlier turn and the tool's output went in: a longer prompt than the question alone.
    assert answered.usage is not None and called.usage is not None
    assert answered.usage.input_tokens > called.usage.input_tokens


def test_a_streamed_text_answer_gives_every_event_in_order(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=MODEL, input="Count to five.", max_output_tokens=12
    ) as stream:
        events = list(stream)
    final: Any = events[-1].response  # type: ignore[union-attr]
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas > 1
    last = "response.completed" if final.status == "completed" else "response.incomplete"
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        last,
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == text and text
    assert final.usage is not None and final.usage.output_tokens > 0
    assert client.responses.retrieve(final.id).output_text == text


def test_a_streamed_forced_call_gives_argument_deltas(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=120,
        extra_body={"seed": 4},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds.count("response.function_call_arguments.delta") > 1
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    [call] = final.output
    assert call.type == "function_call" and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER_SCHEMA)


def test_a_stored_response_is_retrieved_listed_and_deleted(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "Answer in one word."},
            {"role": "user", "content": [{"type": "input_text", "text": "Sky colour?"}]},
        ],
        max_output_tokens=4,
    )
    assert client.responses.retrieve(response.id).output_text == response.output_text
    listed = client.responses.input_items.list(response.id, order="asc")
    assert [item.role for item in listed.data] == ["developer", "user"]  # type: ignore[union-attr]
    newest = client.responses.input_items.list(response.id, limit=1)
    assert newest.data[0].role == "user" and newest.has_more  # type: ignore[union-attr]
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="and?", previous_response_id=response.id)


def test_reasoning_effort_is_ignored_by_a_model_that_does_not_reason(
    client: openai.OpenAI,
) -> None:
    response = client.responses.create(
        model=MODEL, input="Name a fruit.", reasoning={"effort": "low"}, max_output_tokens=6
    )
    assert response.status in {"completed", "incomplete"} and response.output_text
    assert [item.type for item in response.output] == ["message"]  # no reasoning item
    assert response.reasoning is not None and response.reasoning.effort == "low"
