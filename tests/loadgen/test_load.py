"""The load generator's Python API against a real Hearth serving the bundled model, and against
an address where nothing listens."""

from __future__ import annotations

import pytest

from hearth.loadgen.load import LoadSpec, Percentiles, percentile, run_load, run_sweep
from hearth.loadgen.prompt import build_prompt
from hearth.models.bundled import BUNDLED_MODEL_NAME
from support.hearth_server import HearthServer
from support.ports import free_port

engine = pytest.mark.engine

SMALL = {"requests": 4, "max_tokens": 8, "prompt_tokens": 16}


def spec_for(server: HearthServer, **overrides: object) -> LoadSpec:
    values: dict[str, object] = {"url": f"{server.base_url}/v1", "model": BUNDLED_MODEL_NAME}
    return LoadSpec(**(values | SMALL | overrides))  # type: ignore[arg-type]


@engine
def test_non_streamed_requests_are_counted_with_tokens_from_usage(hearth: HearthServer) -> None:
    result = run_load(spec_for(hearth, stream=False, concurrency=2))
    assert (result.requests, result.errors, result.ok) == (4, 0, 4), result.error_messages
    assert result.tokens_counted_from == "usage"
    assert 0 < result.output_tokens <= 4 * 8
    assert result.requests_per_s > 0 and result.output_tokens_per_s > 0
    assert len(result.latencies_s) == 4 and result.latency is not None
    assert result.ttfts_s == [] and result.ttft is None


@engine
def test_streams_report_time_to_first_token(hearth: HearthServer) -> None:
    result = run_load(spec_for(hearth, stream=True, concurrency=2, warmup=1))
    # The warm-up request is not counted.
    assert (result.requests, result.errors) == (4, 0), result.error_messages
    assert result.tokens_counted_from == "usage"
    assert result.output_tokens_per_s > 0
    assert len(result.ttfts_s) == 4
    ttft, latency = result.ttft, result.latency
    assert ttft is not None and latency is not None
    assert 0 < ttft.p50 <= latency.p50
    summary = result.summary()
    assert set(summary["ttft_ms"]) == {"p50", "p95", "p99", "mean"}
    assert summary["ttft_ms"]["p99"] >= summary["ttft_ms"]["p50"] > 0


@engine
def test_streams_without_usage_count_content_chunks(hearth: HearthServer) -> None:
    no_usage = {"stream_options": {"include_usage": False}}
    result = run_load(spec_for(hearth, requests=2, extra_body=no_usage))
    assert (result.requests, result.errors) == (2, 0), result.error_messages
    assert result.tokens_counted_from == "chunks"
    assert result.output_tokens > 0


@engine
def test_completions_endpoint_and_prompt_length(hearth: HearthServer) -> None:
    result = run_load(spec_for(hearth, endpoint="completions", requests=2, prompt_tokens=64))
    assert (result.requests, result.errors) == (2, 0), result.error_messages
    assert result.prompt_tokens is not None
    assert 56 <= result.prompt_tokens <= 72  # about the number asked for, plus a start token


@engine
def test_a_sweep_measures_each_level(hearth: HearthServer) -> None:
    results = run_sweep(spec_for(hearth, requests=2, stream=False), [1, 2])
    assert [r.concurrency for r in results] == [1, 2]
    assert [(r.requests, r.errors) for r in results] == [(2, 0), (2, 0)], results


@engine
def test_a_duration_run_stops_starting_requests_at_the_deadline(hearth: HearthServer) -> None:
    result = run_load(spec_for(hearth, requests=None, duration_s=0.5, max_tokens=4))
    assert result.requests >= 1 and result.errors == 0, result.error_messages
    assert result.duration_s >= 0.5


@engine
def test_http_errors_are_counted_with_their_message(hearth: HearthServer) -> None:
    result = run_load(spec_for(hearth, model="no-such-model", requests=3))
    assert (result.requests, result.errors, result.ok) == (3, 3, 0)
    [(message, count)] = result.error_messages.items()
    assert message.startswith("HTTP 404: ") and "no-such-model" in message
    assert count == 3
    assert result.requests_per_s == 0 and result.latency is None


def test_an_unreachable_url_gives_errors_not_an_exception() -> None:
    spec = LoadSpec(url=f"http://127.0.0.1:{free_port()}/v1", model="m", requests=3)
    result = run_load(spec)
    assert (result.requests, result.errors) == (3, 3)
    [message] = result.error_messages
    assert message.startswith("cannot connect to 127.0.0.1:")


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"url": "127.0.0.1:8080/v1"}, "http://"),
        ({"requests": 4, "duration_s": 1.0}, "not both"),
        ({"concurrency": 0}, "concurrency must be positive"),
        ({"max_tokens": 0}, "max_tokens must be positive"),
        ({"warmup": -1}, "warmup"),
        ({"endpoint": "embeddings"}, "endpoint"),
    ],
)
def test_bad_specs_are_refused(overrides: dict[str, object], complaint: str) -> None:
    values: dict[str, object] = {"url": "http://127.0.0.1:1/v1", "model": "m"}
    with pytest.raises(ValueError, match=complaint):
        LoadSpec(**(values | overrides))  # type: ignore[arg-type]


def test_extra_body_replaces_the_generated_fields() -> None:
    # bench/throughput.py sends one fixed prompt text this way.
    spec = LoadSpec(
        url="http://127.0.0.1:1/v1",
        model="m",
        endpoint="completions",
        stream=False,
        max_tokens=128,
        extra_body={"prompt": "Once upon a time", "temperature": 0.8},
    )
    assert spec.body() == {
        "model": "m",
        "max_tokens": 128,
        "prompt": "Once upon a time",
        "temperature": 0.8,
    }
    assert spec.endpoint_url == "http://127.0.0.1:1/v1/completions"


def test_percentiles_interpolate_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 95) == 3.0
    assert Percentiles.of([]) is None


def test_prompts_have_one_word_per_token_asked_for() -> None:
    assert len(build_prompt(300).split()) == 300
    with pytest.raises(ValueError):
        build_prompt(0)
