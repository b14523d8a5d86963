"""Bad input over real HTTP: a 4xx in the OpenAI error shape naming the problem, and a healthy
server afterwards. llama-server alone accepts several of these or answers them with a 500."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from support.hearth_server import HearthServer, StartHearth

MODEL = "gemma-3-270m"
USER = [{"role": "user", "content": "hi"}]


def assert_openai_error(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for fragment in fragments:
        assert fragment in error["message"]
    assert "Traceback" not in error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "fragments", "param"),
    [
        (b"{not json", ["not valid JSON"], None),
        (b"", ["empty"], None),
        (json.dumps({"messages": USER}).encode(), ["'model'", "Field required"], "model"),
        (json.dumps({"model": MODEL, "messages": []}).encode(), ["'messages'"], "messages"),
        (
            json.dumps({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}).encode(),
            ["'messages[0].role'"],
            "messages[0].role",
        ),
        (
            json.dumps({"model": MODEL, "messages": USER, "temperature": 99}).encode(),
            ["'temperature'", "less than or equal to 2"],
            "temperature",
        ),
        (
            json.dumps({"model": MODEL, "messages": USER, "max_tokens": -1}).encode(),
            ["'max_tokens'"],
            "max_tokens",
        ),
        (
            json.dumps({"model": MODEL, "messages": "hello"}).encode(),
            ["'messages'", "valid array"],
            "messages",
        ),
    ],
)
def test_bad_chat_requests_get_400(
    hearth: HearthServer, body: bytes, fragments: list[str], param: str | None
) -> None:
    response = httpx.post(
        f"{hearth.base_url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    error = assert_openai_error(response, 400, *fragments)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_unknown_model_is_404_listing_the_available_ones(hearth: HearthServer) -> None:
    llm = hearth.openai()
    with pytest.raises(openai.NotFoundError) as caught:
        llm.chat.completions.create(model="gpt-17", messages=USER)  # type: ignore[arg-type]
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found"
    assert "'gpt-17'" in body["message"] and MODEL in body["message"]


def test_unknown_path_and_wrong_method_use_the_error_shape(hearth: HearthServer) -> None:
    assert_openai_error(httpx.get(f"{hearth.base_url}/v1/nothing-here"), 404, "/v1/nothing-here")
    assert_openai_error(httpx.get(f"{hearth.base_url}/v1/chat/completions"), 405, "GET")


def test_oversized_body_is_refused_before_it_is_read(start_hearth: StartHearth) -> None:
    server = start_hearth(env={"HEARTH_MAX_REQUEST_BYTES": "100000"})
    huge = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "x" * 200_000}]}
    ).encode()
    response = httpx.post(f"{server.base_url}/v1/chat/completions", content=huge, timeout=30)
    error = assert_openai_error(response, 413, "limit is 100000 bytes", "max_request_bytes")
    assert error["code"] == "request_too_large"

    # Same without a Content-Length header (chunked upload).
    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 10_000

    response = httpx.post(f"{server.base_url}/v1/chat/completions", content=chunks(), timeout=30)
    assert_openai_error(response, 413, "max_request_bytes")

    # Refused before routing, yet still in the shape of the API the path belongs to.
    ollama = httpx.post(f"{server.base_url}/api/chat", content=huge, timeout=30)
    assert ollama.status_code == 413
    assert set(ollama.json()) == {"error"} and "max_request_bytes" in ollama.json()["error"]
    anthropic = httpx.post(f"{server.base_url}/v1/messages", content=huge, timeout=30)
    assert anthropic.status_code == 413
    assert anthropic.json()["type"] == "error"
    assert "max_request_bytes" in anthropic.json()["error"]["message"]
    assert httpx.get(f"{server.base_url}/ready").status_code == 200


def test_server_stays_healthy_after_bad_requests(hearth: HearthServer) -> None:
    for body in (b"{", b"[]", b'{"model": 1}', b"\xff\xfe"):
        response = httpx.post(f"{hearth.base_url}/v1/chat/completions", content=body)
        assert response.status_code == 400
    llm = hearth.openai()
    reply = llm.chat.completions.create(model=MODEL, messages=USER, max_tokens=2)  # type: ignore[arg-type]
    assert reply.usage is not None
    assert httpx.get(f"{hearth.base_url}/ready").status_code == 200
