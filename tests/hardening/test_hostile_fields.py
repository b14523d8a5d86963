"""No caller can take a model down: fields Hearth forwards are checked before the engine sees
them, so a hostile value is a 400 naming the field, never an engine 500 that counts against the
model for every other caller (issue: six such requests used to open its breaker for ~40 s)."""

from __future__ import annotations

import httpx
import pytest

from support.hearth_server import HearthServer

MODEL = "gemma-3-270m"
CHAT = '{"model": "gemma-3-270m", "messages": [{"role": "user", "content": "Hi"}], '

# Raw bodies: NaN and Infinity are not JSON, but parsers (and Python's json) accept them.
HOSTILE = [
    (CHAT + '"max_tokens": 2, "top_k": NaN}', "top_k"),
    (CHAT + '"max_tokens": 2, "min_p": NaN}', "min_p"),
    (CHAT + '"max_tokens": 2, "min_p": Infinity}', "min_p"),
    (CHAT + '"max_tokens": 2, "logit_bias": {"17": -Infinity}}', "logit_bias.17"),
    (CHAT + '"max_tokens": 2, "logit_bias": {"17": 1e400}}', "logit_bias.17"),
    (CHAT + '"max_tokens": 2, "temperature": NaN}', "temperature"),
    (CHAT + '"max_tokens": 2, "reasoning_format": 5}', "reasoning_format"),
    (CHAT + '"max_tokens": 2, "top_k": "many"}', "top_k"),
    (CHAT + '"max_tokens": 2, "mirostat": 7}', "mirostat"),
    (CHAT + '"max_tokens": 2, "seed": 1e30}', "seed"),
    (CHAT + '"max_tokens": 2, "vendor_extension": NaN}', "vendor_extension"),
    (CHAT + '"max_tokens": 2, "chat_template_kwargs": {"x": [1, NaN]}}', "chat_template_kwargs"),
]


@pytest.mark.parametrize(("body", "field"), HOSTILE)
def test_a_hostile_value_is_a_400_naming_its_field(
    hearth: HearthServer, body: str, field: str
) -> None:
    response = httpx.post(
        f"{hearth.base_url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert field.split(".")[0] in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_many_hostile_requests_leave_the_model_up_for_everyone(hearth: HearthServer) -> None:
    for body, _ in HOSTILE * 2:  # far past the breaker's threshold of failures
        httpx.post(f"{hearth.base_url}/v1/chat/completions", content=body, timeout=30)
    reply = httpx.post(
        f"{hearth.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    deployments = httpx.get(f"{hearth.base_url}/admin/deployments", timeout=10).json()
    (local,) = [d for d in deployments["data"] if d["name"] == MODEL]
    assert local["breaker"] == "closed", local


def test_too_many_messages_are_refused_before_the_engine(hearth: HearthServer) -> None:
    messages = [{"role": "user", "content": "a"}] * 5000
    response = httpx.post(
        f"{hearth.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": messages, "max_tokens": 2},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert "messages" in response.json()["error"]["message"]


def test_max_tokens_past_the_models_cap_is_refused(hearth: HearthServer) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        response = httpx.post(
            f"{hearth.base_url}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], field: 10**9},
            timeout=30,
        )
        assert response.status_code == 400, response.text
        assert "max_output_tokens" in response.json()["error"]["message"]


def test_an_image_to_a_text_only_model_is_a_400(hearth: HearthServer) -> None:
    pixel = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": pixel}},
    ]
    response = httpx.post(
        f"{hearth.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert "does not accept images" in response.json()["error"]["message"]
