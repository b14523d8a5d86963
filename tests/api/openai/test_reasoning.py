"""Reasoning on the chat path through a real `hearth serve`: `reasoning_effort` validated and
passed on, `reasoning_content` from a remote relayed in answers and stream deltas, and a model that
does not reason (the bundled one, on the real engine) answering with it all the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import httpx
import pytest
from openai.types.shared import ReasoningEffort

from hearth.wire.chat import ReasoningEffort as Accepted
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream

LOCAL = "gemma-3-270m"
QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture(scope="module")
def server(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HearthServer]:
    """The bundled model, and a remote deployment `thinker` that reasons."""
    upstream.set_default("thinker", "reasoning")
    config: Path = tmp_path_factory.mktemp("reasoning") / "hearth.yaml"
    config.write_text(
        "preload: []\nrouting: {health_check_interval: 0}\n"
        f"deployments:\n  thinker: {{url: '{upstream.url('thinker')}'}}\n"
    )
    yield start_hearth("--config", str(config))


def test_reasoning_content_is_relayed_and_the_effort_passed_on(
    server: HearthServer, upstream: ScriptedUpstream
) -> None:
    reply = server.openai().chat.completions.create(
        model="thinker",
        messages=QUESTION,
        reasoning_effort="high",
    )
    message = reply.choices[0].message
    assert message.content == "thinker says hi"
    assert (message.model_extra or {}).get("reasoning_content") == "thinker thinks hard"
    assert upstream.received["thinker"][-1].body["reasoning_effort"] == "high"


def test_reasoning_deltas_are_relayed_in_a_stream(
    server: HearthServer, upstream: ScriptedUpstream
) -> None:
    stream = server.openai().chat.completions.create(
        model="thinker",
        messages=QUESTION,
        reasoning_effort="low",
        stream=True,
        stream_options={"include_usage": True},
    )
    reasoning, content, usage = "", "", None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            content += choice.delta.content or ""
    assert reasoning == "thinker thinks hard"
    assert content == "thinker says hi"
    assert usage is not None and usage.completion_tokens == 3
    assert upstream.received["thinker"][-1].body["reasoning_effort"] == "low"


def test_reasoning_in_the_history_reaches_the_remote(
    server: HearthServer, upstream: ScriptedUpstream
) -> None:
    history = [
        *QUESTION,
        {"role": "assistant", "content": "Scattering.", "reasoning_content": "Rayleigh."},
        {"role": "user", "content": "Say more."},
    ]
    server.openai().chat.completions.create(model="thinker", messages=history)
    sent = upstream.received["thinker"][-1].body["messages"]
    assert sent[1]["reasoning_content"] == "Rayleigh."


@pytest.mark.parametrize("effort", ["extreme", 3, ""])
def test_an_unknown_effort_is_a_400_naming_the_field(server: HearthServer, effort: object) -> None:
    answer = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": LOCAL, "messages": QUESTION, "reasoning_effort": effort},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert "reasoning_effort" in answer.json()["error"]["message"]


@pytest.mark.parametrize("effort", ["none", "minimal", "high"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_model_that_does_not_reason_ignores_the_effort(
    server: HearthServer, effort: str, stream: bool
) -> None:
    """The bundled model on the real engine: llama-server hands the effort to the template."""
    llm = server.openai()
    if not stream:
        reply = llm.chat.completions.create(
            model=LOCAL,
            messages=QUESTION,
            reasoning_effort=effort,
            max_tokens=4,
        )
        assert reply.choices[0].message.content
        return
    chunks = llm.chat.completions.create(
        model=LOCAL,
        messages=QUESTION,
        reasoning_effort=effort,
        max_tokens=4,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def test_every_effort_the_sdk_can_send_is_accepted() -> None:
    sdk = {value for arg in get_args(ReasoningEffort) for value in get_args(arg)}
    assert sdk and sdk <= set(get_args(Accepted)), sdk - set(get_args(Accepted))
