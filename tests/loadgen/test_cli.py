"""`hearth bench` from the command line: against a real Hearth, an unreachable address, and
with bad options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hearth.cli.main import cli
from hearth.loadgen.report import SCHEMA
from hearth.models.bundled import BUNDLED_MODEL_NAME
from support.hearth_server import HearthServer
from support.ports import free_port

SUMMARY_FIELDS = {
    "concurrency", "stream", "requests", "errors", "duration_s", "requests_per_s",
    "output_tokens", "output_tokens_per_s", "tokens_counted_from", "prompt_tokens_mean",
    "ttft_ms", "latency_ms", "error_messages",
}  # fmt: skip


def bench(*args: str) -> tuple[int, str, str]:
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(cli, ["bench", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def target(server: HearthServer) -> list[str]:
    return ["--url", f"{server.base_url}/v1", "--model", BUNDLED_MODEL_NAME, "--max-tokens", "8"]


@pytest.mark.engine
def test_a_streamed_sweep_prints_a_table_and_writes_json(
    hearth: HearthServer, tmp_path: Path
) -> None:
    out = tmp_path / "results.json"
    code, stdout, _ = bench(*target(hearth), "-c", "1,2", "-n", "2", "--json", str(out))
    assert code == 0, stdout
    assert "TTFT ms" in stdout and "latency ms" in stdout and "p50/p95/p99" in stdout
    assert f"results written to {out}" in stdout
    report = json.loads(out.read_text())
    assert report["schema"] == SCHEMA
    assert report["spec"]["stream"] is True and report["spec"]["model"] == BUNDLED_MODEL_NAME
    assert [r["concurrency"] for r in report["results"]] == [1, 2]
    for level in report["results"]:
        assert set(level) == SUMMARY_FIELDS
        assert (level["requests"], level["errors"]) == (2, 0), level["error_messages"]
        assert level["output_tokens_per_s"] > 0
        assert level["ttft_ms"]["p50"] > 0 and level["latency_ms"]["p95"] > 0


@pytest.mark.engine
def test_json_on_stdout_leaves_the_table_to_stderr(hearth: HearthServer) -> None:
    code, stdout, stderr = bench(
        *target(hearth), "-n", "4", "-c", "4", "--no-stream", "--json", "-"
    )
    assert code == 0, stderr
    [level] = json.loads(stdout)["results"]
    assert (level["requests"], level["errors"], level["stream"]) == (4, 0, False), level
    assert level["ttft_ms"] is None and level["output_tokens_per_s"] > 0
    assert "latency ms" in stderr and "TTFT" not in stderr


def test_an_unreachable_url_reports_the_errors_and_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    code, stdout, _ = bench("--url", url, "--model", "m", "-n", "3", "-c", "2")
    assert code == 1
    assert "3 of 3 requests failed" in stdout
    assert "3 x cannot connect to 127.0.0.1:" in stdout


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--concurrency", "1,x"], "not a comma-separated list of whole numbers"),
        (["--concurrency", "0"], "levels must be 1 or more"),
        (["--requests", "0"], "0 is not in the range x>=1"),
        (["--duration", "soon"], "'soon' is not a duration"),
        (["--duration", "0s"], "not a positive duration"),
        (["--requests", "4", "--duration", "10s"], "--requests and --duration exclude each other"),
        (["--endpoint", "embeddings"], "'embeddings' is not one of 'chat', 'completions'"),
        (["--max-tokens", "-1"], "-1 is not in the range x>=1"),
    ],
)
def test_bad_options_get_a_clear_message(args: list[str], complaint: str) -> None:
    code, _, stderr = bench("--url", "http://127.0.0.1:1/v1", "--model", "m", *args)
    assert code == 2
    assert complaint in stderr


def test_the_url_and_model_are_checked() -> None:
    code, _, stderr = bench("--url", "localhost:8080", "--model", "m")
    assert code == 2 and "is not an http:// or https:// base URL" in stderr
    code, _, stderr = bench("--url", "http://127.0.0.1:1/v1")
    assert code == 2 and "Missing option '--model'" in stderr
