"""A second Hearth (real engine behind it) as the remote deployment of a gateway Hearth."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.hearth_server import HearthServer, StartHearth
from support.waiting import wait_for

MODEL = "gemma-3-270m"


@pytest.fixture(scope="module")
def front(
    hearth: HearthServer, start_hearth: StartHearth, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    config: Path = tmp_path_factory.mktemp("front") / "hearth.yaml"
    config.write_text(
        "preload: []\n"
        "deployments:\n"
        f"  far: {{url: '{hearth.base_url}/v1', model: {MODEL}, aliases: [gpt-4o-mini]}}\n"
    )
    return start_hearth("--config", str(config))


def test_the_remote_engine_answers_through_the_gateway(
    front: HearthServer, hearth: HearthServer
) -> None:
    raw = front.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=6,
        extra_body={"ignore_eos": True},
    )
    answer = raw.parse()
    assert answer.model == "far"
    assert answer.usage is not None and answer.usage.completion_tokens == 6
    assert answer.choices[0].message.content
    # The request id went along: the far Hearth logged the same one (its access line is
    # written once the response has gone out, so it may land a moment after we read it).
    request_id = raw.headers["x-request-id"]
    wait_for(lambda: request_id in hearth.log(), what=f"request id {request_id} in the far log")


def test_a_remote_stream_is_relayed_with_its_usage(front: HearthServer) -> None:
    chunks = list(
        front.openai().chat.completions.create(
            model="far",
            messages=[{"role": "user", "content": "Count"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
