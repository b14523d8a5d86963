"""The Responses API through a real `hearth serve` gateway with keys in a real SQLite file, in
front of a scripted upstream, with the real `openai` SDK: stored responses (retrieve, input
items, delete) owned by their key, conversations continued with previous_response_id (function
call outputs included), usage rows, a remote deployment breaking off mid-stream, and hostile
input."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from support.access import ADMIN_KEY, create_key, gateway_config, query
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream
from support.waiting import wait_for

DEPLOYMENTS = {"m": "", "other": "", "tools": "", "drop": "", "chain": ""}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'hearth.db'}"


@pytest.fixture(scope="module")
def gateway(
    start_hearth: StartHearth,
    upstream: ScriptedUpstream,
    db_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> HearthServer:
    upstream.set_default("tools", "tools")
    upstream.set_default("drop", "drop")
    config: Path = tmp_path_factory.mktemp("gw") / "hearth.yaml"
    gateway_config(config, upstream, db_url, DEPLOYMENTS)
    return start_hearth("--config", str(config), env={"TEST_ADMIN_KEY": ADMIN_KEY})


def make_client(gateway: HearthServer, db_url: str, **options: Any) -> openai.OpenAI:
    _, key = create_key(db_url, f"k-{uuid.uuid4().hex[:6]}", **options)
    headers = {"authorization": f"Bearer {key}"}
    wait_for(
        lambda: httpx.get(f"{gateway.base_url}/v1/models", headers=headers).status_code == 200,
        what="the new key",
    )
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0)


@pytest.fixture
def client(gateway: HearthServer, db_url: str) -> Iterator[openai.OpenAI]:
    with make_client(gateway, db_url) as made:
        yield made


def test_a_response_is_stored_retrieved_listed_and_deleted(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="m",
        instructions="Be brief.",
        input=[{"role": "user", "content": "hi"}],
        metadata={"topic": "greeting"},
    )
    assert response.id.startswith("resp_") and len(response.id) == 37
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "m says hi"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (5, 3)
    assert response.metadata == {"topic": "greeting"} and response.instructions == "Be brief."
    again = client.responses.retrieve(response.id)
    assert again.model_dump() == response.model_dump()
    items = client.responses.input_items.list(response.id)
    [item] = items.data
    assert item.type == "message" and item.role == "user"
    assert item.content[0].type == "input_text" and item.content[0].text == "hi"
    assert items.first_id == item.id == items.last_id and items.has_more is False
    deleted = client.responses.delete(response.id)
    assert deleted is None  # the SDK reads the body, checked raw below
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.retrieve(response.id)
    assert missing.value.body["code"] == "not_found"  # type: ignore[index]


def test_delete_answers_in_openai_shape(gateway: HearthServer, client: openai.OpenAI) -> None:
    response = client.responses.create(model="m", input="hi")
    headers = {"authorization": f"Bearer {client.api_key}"}
    url = f"{gateway.base_url}/v1/responses/{response.id}"
    answer = httpx.delete(url, headers=headers)
    assert answer.status_code == 200
    assert answer.json() == {"id": response.id, "object": "response.deleted", "deleted": True}
    assert httpx.delete(url, headers=headers).status_code == 404


def test_another_key_is_told_the_response_does_not_exist(
    gateway: HearthServer, db_url: str, client: openai.OpenAI
) -> None:
    response = client.responses.create(model="m", input="hi")
    with make_client(gateway, db_url) as stranger:
        with pytest.raises(openai.NotFoundError):
            stranger.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            stranger.responses.input_items.list(response.id)
        with pytest.raises(openai.NotFoundError):
            stranger.responses.delete(response.id)
        with pytest.raises(openai.NotFoundError) as continued:
            stranger.responses.create(model="m", input="and?", previous_response_id=response.id)
        error: Any = continued.value.body
        assert error["code"] == "previous_response_not_found"
        assert error["param"] == "previous_response_id"
    assert client.responses.retrieve(response.id).id == response.id  # still there


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    response = client.responses.create(model="m", input="hi", store=False)
    assert response.store is False and response.output_text == "m says hi"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_previous_response_id_sends_the_whole_conversation(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    first = client.responses.create(model="chain", input="one", instructions="Old rules.")
    second = client.responses.create(model="chain", input="two", previous_response_id=first.id)
    client.responses.create(
        model="chain", input="three", previous_response_id=second.id, instructions="New rules."
    )
    sent = upstream.received["chain"][-1].body["messages"]
    assert sent == [  # instructions are not carried over, as OpenAI
        {"role": "system", "content": "New rules."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "chain says hi"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "chain says hi"},
        {"role": "user", "content": "three"},
    ]
    # input_items lists this request's input only.
    assert [item.id for item in client.responses.input_items.list(second.id).data]


def test_a_function_call_and_its_output_continue_the_conversation(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    called = client.responses.create(
        model="tools", input="Weather in Paris?", tools=[WEATHER], tool_choice="required"
    )
    [call] = called.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id == "call_1"
    assert call.id is not None and call.id.startswith("fc_")
    asked = upstream.received["tools"][-1].body
    assert asked["tool_choice"] == "required"
    assert asked["tools"][0]["function"]["parameters"] == WEATHER["parameters"]
    upstream.script("tools", "ok")
    answered = client.responses.create(
        model="tools",
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}],
        tools=[WEATHER],
    )
    assert answered.output_text == "tools says hi"
    assert upstream.received["tools"][-1].body["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    ]


def test_a_streamed_tool_call_arrives_as_argument_deltas(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="tools", input="Weather?", tools=[WEATHER], tool_choice="required"
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * 3,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    [call] = final.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    assert client.responses.retrieve(final.id).output[0].id == call.id  # stored as streamed


def test_a_deployment_breaking_off_mid_stream_gives_response_failed(
    client: openai.OpenAI,
) -> None:
    stream = client.responses.create(model="drop", input="hi", stream=True)
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds  # it had started
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    failed: Any = events[-1]
    assert failed.response.status == "failed" and failed.response.error.message
    assert failed.response.output_text == "drop says"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(failed.response.id)  # a failed answer is not stored


def test_usage_rows_are_recorded_for_responses(
    gateway: HearthServer, db_url: str, upstream: ScriptedUpstream
) -> None:
    key, secret = create_key(db_url, "usage")
    client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=secret, max_retries=0)
    wait_for(lambda: _models_ok(gateway, secret), what="the new key")
    client.responses.create(model="m", input="hi")
    with client.responses.stream(model="m", input="hi") as stream:
        final = stream.get_final_response()
    client.close()
    assert final.usage is not None and final.usage.output_tokens == 3  # asked for from below
    assert upstream.received["m"][-1].body["stream_options"] == {"include_usage": True}
    sql = f"SELECT prompt_tokens, completion_tokens, status FROM usage WHERE key_id = '{key.id}'"
    wait_for(lambda: len(query(db_url, sql)) == 2, what="two usage rows")
    assert sorted(tuple(row) for row in query(db_url, sql)) == [(5, 3, 200), (5, 3, 200)]


def _models_ok(gateway: HearthServer, key: str) -> bool:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.get(f"{gateway.base_url}/v1/models", headers=headers).status_code == 200


def test_a_key_sees_only_its_models(gateway: HearthServer, db_url: str) -> None:
    with make_client(gateway, db_url, models=["m"]) as scoped:
        assert scoped.responses.create(model="m", input="hi").output_text == "m says hi"
        with pytest.raises(openai.NotFoundError) as unknown:
            scoped.responses.create(model="other", input="hi")
        assert "'other'" in str(unknown.value) and "Available models: m" in str(unknown.value)


HOSTILE: list[Any] = [
    {"model": "m", "input": 5},
    {"model": "m", "input": "hi", "temperature": "hot"},
    {"model": "m", "input": "hi", "metadata": {f"k{i}": "v" * 512 for i in range(200)}},
    {"model": "m", "input": "hi", "tools": [{"type": "web_search_preview"}]},
    {"model": "m", "input": "hi", "tools": [{"type": "function"}]},
    {"model": "m", "input": [{"type": "computer_call_output", "call_id": "x"}]},
    {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
    {"model": "m", "input": "hi", "text": {"format": {"type": "json_schema"}}},
    {"model": "m", "input": "hi", "tool_choice": {"type": "file_search"}},
    {"model": "m", "input": "hi", "previous_response_id": "../../etc/passwd"},
    {"model": "m", "input": "hi", "background": True},
    {"model": "m", "input": "hi", "max_output_tokens": -1},
    {"model": "m", "input": [None]},
    {"input": "hi"},
    [],
]


def test_hostile_input_is_refused_in_openai_shape(gateway: HearthServer, db_url: str) -> None:
    _, key = create_key(db_url, "hostile")
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    wait_for(lambda: _models_ok(gateway, key), what="the new key")
    url = f"{gateway.base_url}/v1/responses"
    for body in HOSTILE:
        answer = httpx.post(url, content=json.dumps(body), headers=headers, timeout=10)
        assert 400 <= answer.status_code < 500, (body, answer.status_code, answer.text)
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"], body
    nan = b'{"model": "m", "input": "hi", "temperature": NaN}'
    answer = httpx.post(url, content=nan, headers=headers)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "temperature"
    for path in (
        "..%2F..%2Fetc%2Fpasswd",
        "resp_..%2F..%2Fx",
        "resp_" + "z" * 32,
        "resp_" + "0" * 32,
        "%00",
        "resp_" + "a" * 5000,
    ):
        for method in ("GET", "DELETE"):
            answer = httpx.request(method, f"{url}/{path}", headers=headers)
            assert answer.status_code == 404, (method, path, answer.text)
        listed = httpx.get(f"{url}/{path}/input_items", headers=headers)
        assert listed.status_code == 404, (path, listed.text)
    for query_string in ("limit=0", "limit=101", "limit=x", "order=sideways"):
        answer = httpx.get(f"{url}/resp_{'0' * 32}/input_items?{query_string}", headers=headers)
        assert answer.status_code == 400, (query_string, answer.text)
    assert httpx.get(f"{gateway.base_url}/health").status_code == 200
    time.sleep(0.1)
    assert "Traceback" not in gateway.log()


def test_a_stream_cut_at_shutdown_ends_with_response_failed(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    upstream.set_default("stalled", "stall")
    config = tmp_path / "hearth.yaml"
    config.write_text(
        "preload: []\nshutdown_drain: 1\n"
        f"deployments:\n  stalled: {{url: '{upstream.url('stalled')}'}}\n"
    )
    server = start_hearth("--config", str(config))
    events: list[dict[str, Any]] = []
    started = threading.Event()

    def read() -> None:
        body = {"model": "stalled", "input": "hi", "stream": True}
        with httpx.stream("POST", f"{server.base_url}/v1/responses", json=body, timeout=30) as sse:
            for line in sse.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if events[-1]["type"] == "response.output_text.delta":
                        started.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert started.wait(30)
    server.proc.send_signal(signal.SIGTERM)
    reader.join(timeout=30)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    last = events[-1]
    assert last["type"] == "response.failed", [event["type"] for event in events]
    assert last["response"]["id"] == events[0]["response"]["id"]
    assert last["response"]["error"]["message"].startswith("Hearth is shutting down")
    assert last["response"]["output"][0]["content"][0]["text"] == "stalled"
