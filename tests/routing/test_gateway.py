"""Hearth as a gateway in front of remote deployments: a scripted upstream on loopback that
answers, fails, hangs or drops streams as each test says, reached through a real `hearth serve`."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from routing.conftest import UPSTREAM_KEY
from support.hearth_server import HearthServer
from support.scripted_upstream import TOOL_ARGUMENT_FRAGMENTS, ScriptedUpstream
from support.waiting import wait_for

HI = [{"role": "user", "content": "Hi"}]


def chat(gateway: HearthServer, model: str, **fields: Any) -> httpx.Response:
    headers = fields.pop("headers", {})
    body = {"model": model, "messages": HI, **fields}
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30
    )


def sse_data(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


def content_of(events: list[str]) -> str:
    text = ""
    for data in events:
        if data == "[DONE]":
            continue
        for choice in json.loads(data).get("choices", []):
            text += choice["delta"].get("content") or ""
    return text


def scrape(gateway: HearthServer, name: str, **labels: str) -> float:
    text = httpx.get(f"{gateway.base_url}/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            metric, value = line.rsplit(" ", 1)
            got = metric[len(name) :].strip("{}")
            if ",".join(sorted(got.split(","))) == want or (not labels and not got):
                return float(value)
    return 0.0


def test_a_remote_deployment_answers_the_openai_sdk(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    llm = gateway.openai()
    answer = llm.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    completion = answer.parse()
    assert completion.choices[0].message.content == "plain says hi"
    assert completion.model == "plain"  # the public name, not the upstream's
    assert answer.headers["x-hearth-deployment"] == "plain"
    assert answer.headers["x-hearth-attempts"] == "1"
    assert float(answer.headers["x-hearth-overhead-ms"]) >= 0
    sent = upstream.received["plain"][-1]
    assert sent.body["model"] == "upstream-name"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.headers["x-team"] == "blue"
    assert sent.headers["x-request-id"] == answer.headers["x-request-id"]


def test_a_remote_stream_relays_chunks_and_hides_the_usage_chunk_unless_asked(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    llm = gateway.openai()
    chunks = list(llm.chat.completions.create(model="plain", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "plain says hi"
    assert all(c.choices for c in chunks)  # no usage-only chunk the client did not ask for
    # Hearth asked the upstream for usage anyway, to count tokens.
    assert upstream.received["plain"][-1].body["stream_options"] == {"include_usage": True}
    with_usage = list(
        llm.chat.completions.create(
            model="plain", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.completion_tokens == 3


def test_fallback_follows_the_priority_order(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.set_default("fb1", "status:500")
    upstream.set_default("fb2", "status:503")
    response = chat(gateway, "chain")
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "fb3 says hi"
    assert response.json()["model"] == "chain"
    assert response.headers["x-hearth-deployment"] == "fb3"
    # One retry each on the failing ones, then the next deployment.
    assert (upstream.hits("fb1"), upstream.hits("fb2"), upstream.hits("fb3")) == (2, 2, 1)
    assert response.headers["x-hearth-attempts"] == "5"


def test_transient_failures_before_the_first_byte_are_retried(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.script("retry", "status:502")
    response = chat(gateway, "retry")
    assert response.status_code == 200 and response.headers["x-hearth-attempts"] == "2"
    assert upstream.hits("retry") == 2

    upstream.script("retry429", "status:429:retry=0.3")
    started = time.monotonic()
    response = chat(gateway, "retry429")
    assert response.status_code == 200 and upstream.hits("retry429") == 2
    assert time.monotonic() - started >= 0.3  # Retry-After was honoured

    upstream.script("retrystream", "status:503")
    response = chat(gateway, "retrystream", stream=True)
    assert response.status_code == 200
    assert content_of(sse_data(response)) == "retrystream says hi"
    assert response.headers["x-hearth-attempts"] == "2"


def test_a_stream_that_fails_after_output_started_ends_with_an_error_event_and_no_retry(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.set_default("drop", "drop")
    response = chat(gateway, "dropchain", stream=True)
    assert response.status_code == 200
    events = sse_data(response)
    assert content_of(events[:2]) == "drop says"
    assert "error" in json.loads(events[-2])
    assert events[-1] == "[DONE]"
    assert upstream.hits("drop") == 1 and upstream.hits("dropbackup") == 0
    # The openai SDK sees the failure rather than a clean, truncated success.
    with pytest.raises(openai.APIError):
        list(gateway.openai().chat.completions.create(model="drop", messages=HI, stream=True))


def test_a_client_hanging_up_closes_a_silent_upstream_stream_at_once(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    """No more output is coming to notice the hang-up by: Hearth must watch the client itself."""
    upstream.set_default("stall", "stall")
    body = {"model": "stall", "messages": HI, "stream": True}
    with httpx.stream("POST", f"{gateway.base_url}/v1/chat/completions", json=body) as response:
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
        assert content_of([first[6:]]) == "stall"
    wait_for(lambda: upstream.abandoned["stall"] == 1, timeout=3, what="the upstream to be left")
    assert chat(gateway, "stall").status_code == 200  # and the gateway carries on


def test_client_errors_are_neither_retried_nor_fallen_back(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.set_default("bad", "status:400")
    response = chat(gateway, "badchain")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "scripted failure 400"
    assert upstream.hits("bad") == 1 and upstream.hits("badbackup") == 0


def test_the_breaker_opens_skips_half_opens_and_closes(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.set_default("brk", "status:500")
    assert chat(gateway, "brkchain").headers["x-hearth-deployment"] == "brkbackup"
    assert upstream.hits("brk") == 2  # failures 1 and 2 (one retry)
    assert chat(gateway, "brkchain").headers["x-hearth-deployment"] == "brkbackup"
    assert upstream.hits("brk") == 3  # failure 3 opened the breaker: no retry after it
    assert scrape(gateway, "hearth_deployment_breaker_state", deployment="brk") == 2
    response = chat(gateway, "brkchain")
    assert response.headers["x-hearth-deployment"] == "brkbackup"
    assert upstream.hits("brk") == 3  # skipped while open
    assert response.headers["x-hearth-attempts"] == "1"

    upstream.set_default("brk", "ok")
    time.sleep(1.6)  # the cooldown
    assert scrape(gateway, "hearth_deployment_breaker_state", deployment="brk") == 1
    response = chat(gateway, "brkchain")  # the half-open trial
    assert response.headers["x-hearth-deployment"] == "brk"
    assert scrape(gateway, "hearth_deployment_breaker_state", deployment="brk") == 0
    assert chat(gateway, "brkchain").headers["x-hearth-deployment"] == "brk"


def test_the_weighted_split_holds_over_many_requests(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=30) as client:
        served = Counter(
            client.post("/v1/chat/completions", json={"model": "split", "messages": HI}).headers[
                "x-hearth-deployment"
            ]
            for _ in range(300)
        )
    assert served["wa"] + served["wb"] == 300
    # 80/20: three standard deviations of a binomial(300, 0.8) are about 21 requests.
    assert abs(served["wa"] - 240) <= 21, served


def test_tool_call_deltas_pass_through_unchanged(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.set_default("tools", "tools")
    response = chat(gateway, "tools", stream=True)
    relayed = [json.loads(data) for data in sse_data(response) if data != "[DONE]"]
    fragments = [
        call["function"].get("arguments")
        for chunk in relayed
        for call in chunk["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert fragments == ["", *TOOL_ARGUMENT_FRAGMENTS]
    first_call = relayed[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first_call == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert relayed[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # Through the SDK, the fragments add up to the call.
    stream = gateway.openai().chat.completions.create(model="tools", messages=HI, stream=True)
    arguments = "".join(
        call.function.arguments or ""
        for chunk in stream
        for call in (chunk.choices[0].delta.tool_calls or [])
        if call.function is not None
    )
    assert json.loads(arguments) == {"city": "Paris"}


def test_deterministic_answers_are_cached_and_no_cache_skips_the_cache(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    hits_before = scrape(gateway, "hearth_cache_lookups_total", result="hit")
    first = chat(gateway, "cached", temperature=0)
    second = chat(gateway, "cached", temperature=0)
    assert first.headers["x-hearth-cache"] == "miss" and second.headers["x-hearth-cache"] == "hit"
    assert second.json() == first.json()
    assert upstream.hits("cached") == 1
    fresh = chat(gateway, "cached", temperature=0, headers={"cache-control": "no-cache"})
    assert fresh.headers["x-hearth-cache"] == "miss" and upstream.hits("cached") == 2
    # Sampling at a temperature is not deterministic: never cached.
    assert "x-hearth-cache" not in chat(gateway, "cached", temperature=0.7).headers
    assert upstream.hits("cached") == 3
    # Streams are cached as streams.
    streamed = [chat(gateway, "cached", seed=4, stream=True) for _ in range(2)]
    assert [s.headers["x-hearth-cache"] for s in streamed] == ["miss", "hit"]
    assert content_of(sse_data(streamed[1])) == "cached says hi"
    assert sse_data(streamed[1])[-1] == "[DONE]"
    assert upstream.hits("cached") == 4
    assert scrape(gateway, "hearth_cache_lookups_total", result="hit") - hits_before == 2


def test_a_slow_first_byte_times_out_and_falls_back(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.set_default("hang", "hang")
    started = time.monotonic()
    response = chat(gateway, "hangchain")
    assert response.status_code == 200
    assert response.headers["x-hearth-deployment"] == "hangbackup"
    assert time.monotonic() - started < 5
    assert upstream.hits("hang") == 2  # a timeout before the first byte is retried once


def test_an_unreachable_deployment_falls_back(gateway: HearthServer) -> None:
    response = chat(gateway, "closedchain", stream=True)
    assert response.status_code == 200
    assert response.headers["x-hearth-deployment"] == "hangbackup"


def test_when_every_deployment_fails_the_error_names_each(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.set_default("all1", "status:500")
    upstream.set_default("all2", "status:429")
    response = chat(gateway, "allfail")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "no_deployment_available"
    for name in ("all1", "all2", "closed2"):
        assert f"{name}:" in error["message"]
    assert response.headers["x-hearth-attempts"] == "6"


def test_lowest_cost_and_lowest_latency_pick_their_deployment(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    assert {chat(gateway, "thrifty").headers["x-hearth-deployment"] for _ in range(5)} == {"cheap"}
    upstream.set_default("lat_slow", "slow:0.3")
    served = Counter(chat(gateway, "fastest").headers["x-hearth-deployment"] for _ in range(8))
    # Both are measured first; after that the fast one gets every request.
    assert served["lat_slow"] == 1 and served["lat_fast"] == 7


def test_least_busy_spreads_concurrent_requests(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.set_default("lb1", "slow:0.6")
    upstream.set_default("lb2", "slow:0.6")
    with ThreadPoolExecutor(4) as pool:
        served = Counter(
            response.headers["x-hearth-deployment"]
            for response in pool.map(lambda _: chat(gateway, "idle"), range(4))
        )
    assert served == {"lb1": 2, "lb2": 2}


def test_remote_models_are_listed_and_imported(gateway: HearthServer) -> None:
    models = {m.id: m for m in gateway.openai().models.list().data}
    assert {"plain", "gpt-4o-mini", "chain", "imp/m1", "imp/m2"} <= set(models)
    card = httpx.get(f"{gateway.base_url}/v1/models/chain").json()
    assert card["deployments"] == ["fb1", "fb2", "fb3"] and card["strategy"] == "priority"


def test_the_upstream_key_never_shows(gateway: HearthServer, upstream: ScriptedUpstream) -> None:
    upstream.script("plain", "status:401")
    failed = chat(gateway, "plain")
    assert failed.status_code == 401
    for text in (
        failed.text,
        httpx.get(f"{gateway.base_url}/v1/models").text,
        httpx.get(f"{gateway.base_url}/metrics").text,
        gateway.log(),
    ):
        assert UPSTREAM_KEY not in text


def test_tokens_are_counted_when_the_upstream_reports_no_usage(
    gateway: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.set_default("nousage", "nousage")
    before = scrape(gateway, "hearth_tokens_total", model="nousage", direction="out")
    response = chat(gateway, "nousage", stream=True, stream_options={"include_usage": True})
    assert content_of(sse_data(response)) == "nousage says hi"
    after = scrape(gateway, "hearth_tokens_total", model="nousage", direction="out")
    assert after - before == 3  # one per content chunk
