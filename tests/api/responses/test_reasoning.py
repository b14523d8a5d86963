"""Reasoning through the Responses API: a remote deployment that reasons (`reasoning_content`, as
vLLM and llama.cpp's reasoning parsers send it) gives a reasoning item before the message, whole
and streamed (`response.reasoning_text.*` events), and `reasoning.effort` is passed on as the
chat request's `reasoning_effort`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from support.hearth_server import StartHearth
from support.scripted_upstream import ScriptedUpstream

THOUGHT = "thinker thinks hard"  # the scripted upstream's "reasoning" behaviour


@pytest.fixture(scope="module")
def client(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[openai.OpenAI]:
    upstream.set_default("thinker", "reasoning")
    config: Path = tmp_path_factory.mktemp("thinker") / "hearth.yaml"
    url = upstream.url("thinker")
    config.write_text(f"preload: []\ndeployments:\n  thinker: {{url: '{url}'}}\n")
    yield start_hearth("--config", str(config)).openai()


def test_reasoning_becomes_a_reasoning_item(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    response = client.responses.create(
        model="thinker", input="A colour?", reasoning={"effort": "high"}
    )
    assert upstream.received["thinker"][-1].body["reasoning_effort"] == "high"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == THOUGHT and reasoning.id.startswith("rs_")
    assert response.output_text == "thinker says hi"
    # Stored with the conversation, reasoning is not sent on to the model with the next turn.
    again = client.responses.create(
        model="thinker", input="Another?", previous_response_id=response.id
    )
    assert upstream.received["thinker"][-1].body["messages"] == [
        {"role": "user", "content": "A colour?"},
        {"role": "assistant", "content": "thinker says hi"},
        {"role": "user", "content": "Another?"},
    ]
    assert again.status == "completed"


def test_streamed_reasoning_gives_reasoning_text_events(client: openai.OpenAI) -> None:
    with client.responses.stream(model="thinker", input="A colour?") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.reasoning_text.delta"] * 3,
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = [e for e in events if e.type == "response.reasoning_text.done"]
    assert done[0].text == THOUGHT  # type: ignore[union-attr]
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output_text == "thinker says hi"
    assert final.usage is not None and final.usage.output_tokens == 3
