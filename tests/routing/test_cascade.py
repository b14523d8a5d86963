"""Cascade routes: the cheap deployment answers first and is kept only if its answer passes the
route's checks, through a real `hearth serve` in front of scripted upstreams (which say exactly
what a test needs a model to get wrong), with the rejected attempts' usage in a real SQLite file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from hearth.config import CascadeSettings
from hearth.routing.cascade import REJECTIONS, rejection
from routing.test_gateway import scrape
from support.access import ADMIN_KEY, gateway_config, query
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream
from support.tool_schemas import WEATHER

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
AS_CITY: Any = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}}
TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
ASK: Any = [{"role": "user", "content": "Which city?"}]
GOOD_CITY = '{"city": "Lyon", "population": 522000}'

ROUTES = """
routes:
  smart:
    strategy: cascade
    deployments: [small, large]
  sure:
    strategy: cascade
    deployments: [small2, large2]
    cascade: {min_logprob: -1.5, pattern: '^[A-Z]', buffer_streams: true}
"""
DEPLOYMENTS = {
    "small": "price: {input: 0.1, output: 0.2}",
    "large": "price: {input: 3, output: 15}",
    "small2": "",
    "large2": "",
}


@pytest.fixture(scope="module")
def upstream() -> Any:
    server = ScriptedUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('cascade') / 'usage.db'}"


@pytest.fixture(scope="module")
def gateway(
    start_hearth: StartHearth,
    upstream: ScriptedUpstream,
    database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> HearthServer:
    path = tmp_path_factory.mktemp("cascade-config") / "hearth.yaml"
    config = gateway_config(path, upstream, database, DEPLOYMENTS, ROUTES)
    return start_hearth("--config", str(config), "--no-auth", env={"TEST_ADMIN_KEY": ADMIN_KEY})


def ask(gateway: HearthServer, model: str, **fields: Any) -> httpx.Response:
    body = {"model": model, "messages": ASK, **fields}
    return httpx.post(f"{gateway.base_url}/v1/chat/completions", json=body, timeout=30)


def usage_rows(database: str, request_id: str) -> list[tuple[Any, ...]]:
    """The request's usage rows, oldest first, once the writer has flushed them."""
    deadline = time.monotonic() + 10
    while True:
        rows = query(
            database,
            "SELECT deployment, escalated, prompt_tokens, completion_tokens, cost FROM usage "
            f"WHERE request_id = '{request_id}' ORDER BY id",
        )
        if rows or time.monotonic() > deadline:
            return [tuple(row) for row in rows]
        time.sleep(0.1)


def test_an_answer_off_the_requested_schema_escalates_and_both_attempts_are_priced(
    gateway: HearthServer, upstream: ScriptedUpstream, database: str
) -> None:
    upstream.script("small", 'say:{"city": "Lyon"}')  # valid JSON, but no population
    upstream.script("large", f"say:{GOOD_CITY}")
    answer = ask(gateway, "smart", response_format=AS_CITY)
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["choices"][0]["message"]["content"]) == json.loads(GOOD_CITY)
    assert answer.headers["x-hearth-deployment"] == "large"
    assert answer.headers["x-hearth-escalations"] == "1"
    assert upstream.received["small"][-1].body["stream"] is False
    rows = usage_rows(database, answer.headers["x-request-id"])
    # 5 prompt and 3 completion tokens each (the scripted usage), at each deployment's price.
    assert rows == [
        ("small", 1, 5, 3, pytest.approx((5 * 0.1 + 3 * 0.2) / 1e6)),
        ("large", 0, 5, 3, pytest.approx((5 * 3 + 3 * 15) / 1e6)),
    ]
    assert (
        scrape(gateway, "hearth_cascade_escalations_total", model="smart", reason="schema_mismatch")
        >= 1
    )


def test_invalid_json_escalates(gateway: HearthServer, upstream: ScriptedUpstream) -> None:
    upstream.script("small", "say:{city: Lyon")
    upstream.script("large", f"say:{GOOD_CITY}")
    answer = ask(gateway, "smart", response_format=AS_CITY)
    assert answer.headers["x-hearth-deployment"] == "large"
    assert (
        scrape(gateway, "hearth_cascade_escalations_total", model="smart", reason="invalid_json")
        >= 1
    )


def test_a_good_answer_is_kept_and_the_strong_model_never_asked(
    gateway: HearthServer, upstream: ScriptedUpstream, database: str
) -> None:
    before = upstream.hits("large")
    upstream.script("small", f"say:{GOOD_CITY}")
    answer = ask(gateway, "smart", response_format=AS_CITY)
    assert answer.headers["x-hearth-deployment"] == "small"
    assert answer.headers["x-hearth-escalations"] == "0"
    assert upstream.hits("large") == before
    rows = usage_rows(database, answer.headers["x-request-id"])
    assert [(row[0], row[1]) for row in rows] == [("small", 0)]


@pytest.mark.parametrize(
    "arguments",
    [
        '{"city": "Paris"}',  # missing the required unit
        '{"city": "Paris", "unit": "kelvin"}',  # not one of the enum
        '{"city": "Paris", "unit": "celsius"',  # not JSON
    ],
)
def test_a_tool_call_with_bad_arguments_escalates(
    gateway: HearthServer, upstream: ScriptedUpstream, arguments: str
) -> None:
    good = '{"city": "Paris", "unit": "celsius"}'
    upstream.script("small", f"call:{arguments}")
    upstream.script("large", f"call:{good}")
    llm = gateway.openai()
    reply = llm.chat.completions.with_raw_response.create(model="smart", messages=ASK, tools=TOOLS)
    assert reply.headers["x-hearth-deployment"] == "large"
    calls = reply.parse().choices[0].message.tool_calls
    assert calls is not None and calls[0].function.arguments == good


def test_a_good_tool_call_is_kept(gateway: HearthServer, upstream: ScriptedUpstream) -> None:
    upstream.script("small", 'call:{"city": "Oslo", "unit": "celsius"}')
    reply = ask(gateway, "smart", tools=TOOLS)
    assert reply.headers["x-hearth-deployment"] == "small"


def test_a_truncated_answer_escalates(gateway: HearthServer, upstream: ScriptedUpstream) -> None:
    upstream.script("small", "cut:The city is")
    upstream.script("large", "say:The city is Lyon.")
    answer = ask(gateway, "smart", max_tokens=3)
    assert answer.headers["x-hearth-deployment"] == "large"
    assert answer.json()["choices"][0]["message"]["content"] == "The city is Lyon."


def test_an_unsure_answer_escalates_and_logprobs_asked_only_for_the_check_are_not_returned(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.script("small2", "unsure:Lyon probably")
    upstream.script("large2", "say:Lyon.")
    answer = ask(gateway, "sure")
    assert answer.headers["x-hearth-deployment"] == "large2"
    assert upstream.received["small2"][-1].body["logprobs"] is True
    assert "logprobs" not in answer.json()["choices"][0]
    upstream.script("small2", "say:Lyon, surely")
    kept = ask(gateway, "sure", logprobs=True)
    assert kept.headers["x-hearth-deployment"] == "small2"
    assert kept.json()["choices"][0]["logprobs"]["content"][0]["logprob"] == -0.1


def test_a_buffered_stream_gets_the_accepted_answer_as_chunks(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.script("small2", "say:lowercase, so off the pattern")
    upstream.script("large2", "say:Upper case.")
    llm = gateway.openai()
    chunks = list(
        llm.chat.completions.create(
            model="sure", messages=ASK, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Upper case."
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8
    assert upstream.received["large2"][-1].body["stream"] is False


def test_without_buffering_a_stream_takes_the_first_deployment_unchecked(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    before = upstream.hits("large")
    llm = gateway.openai()
    with llm.chat.completions.with_streaming_response.create(
        model="smart", messages=ASK, stream=True
    ) as response:
        assert response.headers["x-hearth-deployment"] == "small"
        list(response.iter_lines())
    assert upstream.hits("large") == before


def test_when_every_cheaper_answer_fails_and_the_last_errors_the_client_hears_why(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.script("small", "say:")
    upstream.script("large", "status:400")
    with pytest.raises(openai.BadRequestError):
        gateway.openai().chat.completions.create(model="smart", messages=ASK)
    upstream.script("small", "say:")
    upstream.script("large", "status:503")
    answer = ask(gateway, "smart")
    assert answer.status_code == 503
    assert "small: answer rejected (empty)" in answer.json()["error"]["message"]


# The checks themselves, on answers written out here (each check's rejection and its pass).

DEFAULT = CascadeSettings()


def chat_answer(content: str | None = None, **choice: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": content, **choice.pop("message", {})}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop", **choice}]}


@pytest.mark.parametrize(
    ("settings", "fields", "body", "reason"),
    [
        (DEFAULT, {}, chat_answer("  "), "empty"),
        (DEFAULT, {}, {"choices": []}, "empty"),
        (DEFAULT, {}, chat_answer("ok", finish_reason="length"), "truncated"),
        (DEFAULT, {"response_format": {"type": "json_object"}}, chat_answer("[1]"), "invalid_json"),
        (DEFAULT, {"response_format": AS_CITY}, chat_answer('{"city": 1}'), "schema_mismatch"),
        (
            DEFAULT,
            {"tools": TOOLS},
            chat_answer(
                message={"tool_calls": [{"function": {"name": "other", "arguments": "{}"}}]}
            ),
            "invalid_tool_call",
        ),
        (
            CascadeSettings(min_logprob=-1),
            {},
            chat_answer("x", logprobs={"content": [{"logprob": -3.0}, {"logprob": -0.5}]}),
            "low_logprob",
        ),
        (CascadeSettings(pattern="^yes"), {}, chat_answer("no"), "pattern_mismatch"),
        # Passes:
        (DEFAULT, {}, chat_answer("fine"), None),
        (DEFAULT, {"response_format": AS_CITY}, chat_answer(GOOD_CITY), None),
        (CascadeSettings(valid_json=False), {"response_format": AS_CITY}, chat_answer("x"), None),
        (CascadeSettings(min_logprob=-1), {}, chat_answer("no logprobs reported"), None),
        (CascadeSettings(pattern="^yes"), {}, chat_answer("yes"), None),
        # A schema jsonschema cannot use is the client's mistake: it judges nothing.
        (
            DEFAULT,
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 7}}}},
            chat_answer("{}"),
            None,
        ),
        (
            DEFAULT,
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"$ref": "http://127.0.0.1:9/s"}},
                }
            },
            chat_answer("{}"),
            None,
        ),
    ],
)
def test_each_check(
    settings: CascadeSettings, fields: dict[str, Any], body: dict[str, Any], reason: str | None
) -> None:
    assert rejection(settings, fields, body) == reason
    assert reason is None or reason in REJECTIONS


def test_the_pattern_is_matched_in_linear_time_on_a_long_answer() -> None:
    settings = CascadeSettings(pattern="(a|aa)*$")  # exponential for a backtracking engine
    started = time.perf_counter()
    assert rejection(settings, {}, chat_answer("a" * 60_000 + "b")) is None
    assert time.perf_counter() - started < 1.0


def test_a_bad_pattern_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="linear time"):
        CascadeSettings(pattern="(a)\\1")
