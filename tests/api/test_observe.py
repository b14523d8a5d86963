"""Request ids and metrics through a real `hearth serve`: ids round-trip, and the metrics move as
requests are served."""

from __future__ import annotations

import json
import re
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support.hearth_server import HearthServer, StartHearth

MODEL = "gemma-3-270m"
CHAT = "/v1/chat/completions"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: HearthServer) -> Samples:
    response = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_request_id_is_honoured_or_generated(hearth: HearthServer) -> None:
    given = httpx.get(f"{hearth.base_url}/v1/models", headers={"x-request-id": "trace-42.a"})
    assert given.headers["x-request-id"] == "trace-42.a"
    generated = httpx.get(f"{hearth.base_url}/v1/models")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    unsafe = httpx.get(f"{hearth.base_url}/v1/models", headers={"x-request-id": "a b\tc"})
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])
    error = httpx.post(f"{hearth.base_url}{CHAT}", content=b"{", headers={"x-request-id": "bad-1"})
    assert error.status_code == 400 and error.headers["x-request-id"] == "bad-1"


def test_metrics_move_as_requests_are_served(hearth: HearthServer) -> None:
    before = scrape(hearth)
    llm = hearth.openai()
    plain = llm.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=4,
        extra_body={"ignore_eos": True},
    )
    stream = llm.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    streamed = [chunk for chunk in stream]
    assert streamed[-1].usage is not None
    httpx.post(f"{hearth.base_url}{CHAT}", content=b"{")
    after = scrape(hearth)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"endpoint": CHAT, "model": MODEL, "deployment": MODEL, "status": "200"}
    assert delta("hearth_requests_total", **ok) == 2
    assert delta("hearth_requests_total", endpoint=CHAT, model="", deployment="", status="400") == 1
    assert delta("hearth_request_duration_seconds_count", endpoint=CHAT) == 3
    assert delta("hearth_time_to_first_token_seconds_count", model=MODEL) == 1
    assert delta("hearth_time_per_output_token_seconds_count", model=MODEL) == 1
    assert delta("hearth_gateway_overhead_seconds_count") == 2
    assert delta("hearth_upstream_attempts_total", deployment=MODEL, result="ok") == 2
    assert plain.usage is not None
    assert delta("hearth_tokens_total", model=MODEL, direction="out") == 4 + 5
    assert (
        delta("hearth_tokens_total", model=MODEL, direction="in") >= 2 * plain.usage.prompt_tokens
    )
    assert value(after, "hearth_requests_in_flight") == 1  # the scrape itself
    assert value(after, "hearth_model_loaded", model=MODEL) == 1
    assert value(after, "hearth_model_memory_bytes", model=MODEL) > 250_000_000
    assert value(after, "hearth_model_load_duration_seconds_count", model=MODEL) >= 1
    # The engine's own figures, re-exported with the model label.
    assert ("hearth_engine_requests_processing", (("model", MODEL),)) in after
    assert delta("hearth_engine_tokens_predicted_total", model=MODEL) >= 4 + 5
    # Scrapes and health checks are not counted as API requests.
    assert (
        delta("hearth_requests_total", endpoint="/metrics", model="", deployment="", status="200")
        == 0
    )


def logged(server: HearthServer, marker: str) -> list[str]:
    """The server's log lines with `marker`: the line is written just after the answer ends."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in server.log().splitlines() if marker in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_one_log_line_per_request_with_its_fields(hearth: HearthServer) -> None:
    hearth.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=3,
        extra_headers={"x-request-id": "log-me-1"},
        extra_body={"ignore_eos": True},
    )
    (line,) = logged(hearth, "request_id=log-me-1")
    assert "hearth.access: POST /v1/chat/completions 200" in line
    assert f"model={MODEL}" in line and "completion_tokens=3" in line
    assert "latency_ms=" in line


def test_json_logs(start_hearth: StartHearth) -> None:
    server = start_hearth(env={"HEARTH_LOG_FORMAT": "json"})
    stream = server.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=2,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": "json-1"},
    )
    list(stream)
    (line,) = logged(server, '"request_id": "json-1"')
    entry = json.loads(line)
    assert entry["logger"] == "hearth.access"
    assert entry["status"] == 200 and entry["model"] == MODEL
    assert entry["completion_tokens"] == 2 and entry["ttft_ms"] > 0
