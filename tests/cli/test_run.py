"""`hearth run MODEL PROMPT` against a real `hearth serve`: the answer on stdout, the prompt from
an argument or stdin, --system, --no-stream, --json, a clean one-line error with exit code 1, and
a Hearth started for the call (and stopped after it) when none answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import link_bundled_model
from support.hearth_server import HearthServer, StartHearth
from support.ports import free_port
from support.scripted_upstream import ScriptedUpstream


def config_for(upstream: ScriptedUpstream, folder: Path) -> Path:
    config = folder / "hearth.yaml"
    lines = ["preload: []", "max_output_tokens: 16", "deployments:"]
    lines += [f"  {name}: {{url: '{upstream.url(name)}'}}" for name in ("one", "piped", "whole")]
    config.write_text("\n".join(lines) + "\n")
    return config


@pytest.fixture(scope="module")
def server(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    return start_hearth("--config", str(config_for(upstream, tmp_path_factory.mktemp("run"))))


def hearth_run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    return subprocess.run(
        [sys.executable, "-m", "hearth", "run", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=300,
    )


def test_the_answer_to_an_argument(server: HearthServer, upstream: ScriptedUpstream) -> None:
    url = server.base_url
    done = hearth_run("one", "Why", "is the sky blue?", "--system", "Be brief.", "--url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "one says hi\n"
    body = upstream.received["one"][-1].body
    assert body["stream"] is True
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why is the sky blue?"},
    ]


def test_the_prompt_from_stdin(server: HearthServer, upstream: ScriptedUpstream) -> None:
    done = hearth_run("piped", stdin="What is this?\n", env={"HEARTH_URL": server.base_url})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "piped says hi\n"
    assert upstream.received["piped"][-1].body["messages"] == [
        {"role": "user", "content": "What is this?"}
    ]
    # Both: the piped input first, then the instruction.
    done = hearth_run("piped", "Summarise it.", "--url", server.base_url, stdin="A long text.")
    assert done.returncode == 0, done.stderr
    assert upstream.received["piped"][-1].body["messages"] == [
        {"role": "user", "content": "A long text.\n\nSummarise it."}
    ]


def test_no_stream_and_json(server: HearthServer, upstream: ScriptedUpstream) -> None:
    done = hearth_run("whole", "Hi", "--no-stream", "--url", server.base_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "whole says hi\n"
    assert not upstream.received["whole"][-1].body.get("stream")
    done = hearth_run("whole", "Hi", "--json", "--url", server.base_url)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "whole says hi"
    assert answer["usage"]["completion_tokens"] == 3


def test_an_unknown_model_is_one_clean_line(server: HearthServer) -> None:
    done = hearth_run("no-such-model", "Hi", "--url", server.base_url)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "no-such-model" in lines[0]


def test_no_prompt_is_a_usage_error(server: HearthServer) -> None:
    done = hearth_run("one", "--url", server.base_url, stdin="  \n")
    assert done.returncode == 2 and "no prompt" in done.stderr


def test_nothing_listening_is_one_clean_line() -> None:
    done = hearth_run("one", "Hi", "--url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: no Hearth answers at") and "Traceback" not in done.stderr


def test_the_bundled_model_answers(server: HearthServer) -> None:
    done = hearth_run("gemma-3-270m", "Say hello.", "--url", server.base_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_a_hearth_is_started_when_none_answers(
    upstream: ScriptedUpstream,
    tmp_path: Path,
    llama_server_binary: Path,
    bundled_model_dir: Path,
) -> None:
    data_dir = tmp_path / "data"
    link_bundled_model(bundled_model_dir, data_dir)
    config = config_for(upstream, tmp_path)
    port = free_port()  # where the settings say Hearth is: nothing answers there
    env = {"HEARTH_PORT": str(port), "HEARTH_LLAMA_SERVER": str(llama_server_binary)}
    env["HEARTH_API_KEY"] = "sk-any"  # where to connect, not a setting (`hearth serve` too)
    done = hearth_run("one", "Hi", "--config", str(config), "--data-dir", str(data_dir), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "one says hi\n"
    assert f"no Hearth answers at http://127.0.0.1:{port}: starting one at" in done.stderr
    started = done.stderr.split("starting one at ")[1].split()[0]
    with pytest.raises(httpx.ConnectError):  # and stopped when the command ended
        httpx.get(f"{started}/health", timeout=2)
