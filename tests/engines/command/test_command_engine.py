"""The command engine: an entry's own server command line, filled in at each start, supervised
like any engine; end to end, the real llama-server run as a command through `hearth serve`."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hearth.deployments.build import build_catalogue
from hearth.engines.command.launcher import CommandLauncher
from hearth.engines.llama_cpp.launcher import bundled_template
from hearth.engines.supervisor import EngineSupervisor, SupervisorPolicy
from hearth.errors import ConfigError, EngineUnavailable
from hearth.models.bundled import BUNDLED_TEMPLATE, bundled_model_path
from hearth.settings_layers import load_settings
from support.hearth_server import HearthServer, StartHearth
from support.waiting import wait_for

ECHO_SERVER = Path(__file__).with_name("echo_server.py")


def write_config(tmp_path: Path, settings: dict[str, Any]) -> Path:
    path = tmp_path / "hearth.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def catalogue_for(tmp_path: Path, models: dict[str, Any]):  # type: ignore[no-untyped-def]
    settings = load_settings(write_config(tmp_path, {"models": models}), environ={})
    return build_catalogue(settings, None, tmp_path / "bundled.gguf")


def test_the_command_line_is_filled_in_at_each_start() -> None:
    launcher = CommandLauncher(
        argv=("srv", "--port", "{port}", "--host={host}", "-m", "{model}", '{"k": {"v": 1}}'),
        model="/models/x.gguf",
        alias="x",
        env={"PORT": "{port}", "MODE": "fast"},
        health_path="/v1/models",
    )
    first, second = launcher.command("127.0.0.1", 8123), launcher.command("::1", 9)
    assert first.argv == [
        "srv", "--port", "8123", "--host=127.0.0.1", "-m", "/models/x.gguf", '{"k": {"v": 1}}',
    ]  # fmt: skip
    assert second.argv[2:4] == ["9", "--host=::1"]
    assert first.env == {"PORT": "8123", "MODE": "fast"}
    assert first.health_path == "/v1/models"
    assert "health_path" in first.health_hint


def test_requests_name_the_model_its_server_serves() -> None:
    body: dict[str, Any] = {"model": "public-alias", "messages": []}
    CommandLauncher(("s", "{port}"), model="/models/x", alias="x").prepare_request(body)
    assert body == {"model": "/models/x", "messages": []}
    CommandLauncher(("s", "{port}"), "/models/x", "x", served_model="qwen").prepare_request(body)
    assert body["model"] == "qwen"


def test_an_entry_is_built_from_its_settings(tmp_path: Path) -> None:
    catalogue = catalogue_for(
        tmp_path,
        {
            "plain": {"model": "m", "engine": "command", "command": [sys.executable, "{port}"]},
            "tuned": {
                "model": "~/m",
                # No `engine`: giving a command is enough.
                "command": f"'{sys.executable}' -m some.server --port {{port}} --model {{model}}",
                "task": "embeddings",
                "parallel": 2,
                "memory": "1GiB",
                "health_path": "/v1/models",
                "served_model": "served",
                "env": {"TOKEN": "t"},
            },
        },
    )
    plain, tuned = catalogue.local("plain"), catalogue.local("tuned")
    assert plain.launcher.kind == "command" and tuned.launcher.kind == "command"
    assert (plain.slots, plain.memory_bytes) == (4, 0)
    assert plain.capabilities.names() == ["chat", "completion", "tools"]
    assert not plain.capabilities.token_counting
    assert plain.launcher.model_file is None
    assert plain.launcher.command("h", 1).health_path == "/health"
    assert (tuned.slots, tuned.memory_bytes) == (2, 2**30)
    assert tuned.capabilities.names() == ["embeddings"]
    command = tuned.launcher.command("127.0.0.1", 4321)
    home = os.path.expanduser("~")
    assert command.argv == [
        sys.executable, "-m", "some.server", "--port", "4321", "--model", f"{home}/m",
    ]  # fmt: skip
    assert (command.health_path, command.env) == ("/v1/models", {"TOKEN": "t"})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"command": ["python3", "-m", "http.server"]},
            r"^models\.x\.command: no \{port\} placeholder: .* add e\.g\. --port \{port\}$",
        ),
        ({"engine": "command"}, r"^models\.x\.command: the command engine needs the command line"),
        (
            {"command": ["python3", "--port={port}", "{prot}"]},
            r"^models\.x\.command: unknown placeholder \{prot\}; known: \{host\}, \{model\}, "
            r"\{port\}$",
        ),
        (
            {"command": ["no-such-server-here", "{port}"]},
            r"^models\.x\.command: 'no-such-server-here' is neither an executable file nor",
        ),
        ({"command": "srv '{port}"}, r"models\.x\.command: .*No closing quotation"),
        ({"command": ["python3", "{port}"], "health_path": "health"}, r"models\.x\.health_path"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        catalogue_for(tmp_path, {"x": {"model": "m", **entry}})


async def test_a_server_without_the_health_path_fails_fast_naming_the_setting(
    tmp_path: Path,
) -> None:
    """Python's file server answers 404 on /health: that is a start failure at once, saying which
    setting fixes it, not a wait for the startup timeout."""

    def supervisor(health_path: str) -> EngineSupervisor:
        files = CommandLauncher(
            argv=(sys.executable, "-m", "http.server", "{port}", "--bind", "{host}"),
            model="files",
            alias="files",
            health_path=health_path,
        )
        policy = SupervisorPolicy(startup_timeout=60, backoff_initial=60, backoff_max=60)
        return EngineSupervisor("files", files, tmp_path / "files.log", policy)

    failing = supervisor("/health")
    failing.start()
    started = time.monotonic()
    try:
        with pytest.raises(EngineUnavailable) as caught:
            await failing.endpoint()
    finally:
        await failing.stop()
    assert time.monotonic() - started < 30
    assert "no health check at /health (it answers 404 Not Found)" in caught.value.message
    assert "set the model's health_path" in caught.value.message

    fixed = supervisor("/")
    fixed.start()
    try:
        assert (await fixed.endpoint()).startswith("http://127.0.0.1:")
    finally:
        await fixed.stop()


def ready_models(server: HearthServer) -> dict[str, Any]:
    models: dict[str, Any] = httpx.get(f"{server.base_url}/ready", timeout=5).json()["models"]
    return models


@pytest.mark.engine
def test_llama_server_run_as_a_command_answers_and_is_restarted(
    start_hearth: StartHearth,
    llama_server_binary: Path,
    bundled_model_dir: Path,
    tmp_path: Path,
) -> None:
    command = [
        str(llama_server_binary), "--port", "{port}", "--host", "{host}", "-m", "{model}",
        "--ctx-size", "2048", "--parallel", "2", "--no-webui",
        "--jinja", "--chat-template-file", str(bundled_template(BUNDLED_TEMPLATE)),
    ]  # fmt: skip
    model = {"model": str(bundled_model_path(bundled_model_dir)), "command": command}
    config = write_config(
        tmp_path, {"preload": ["custom"], "models": {"custom": {**model, "engine": "command"}}}
    )
    server = start_hearth("--config", str(config))
    assert ready_models(server) == {"custom": {"state": "ready", "restarts": 0, "last_error": None}}
    (pid,) = server.engine_pids()
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"--host") + 1] == b"127.0.0.1"
    assert argv[argv.index(b"--port") + 1].isdigit()
    assert argv[argv.index(b"-m") + 1] == str(bundled_model_path(bundled_model_dir)).encode()

    def ask() -> None:
        raw = server.openai().chat.completions.with_raw_response.create(
            model="custom", messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
        assert raw.headers["x-hearth-deployment"] == "custom"
        reply = raw.parse()
        assert reply.choices[0].message.content is not None
        assert reply.usage is not None and reply.usage.completion_tokens > 0

    ask()
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: ready_models(server)["custom"]
        == {"state": "ready", "restarts": 1, "last_error": None},
        timeout=120,
        what="the engine to be restarted",
    )  # fmt: skip
    assert server.engine_pids() not in ([], [pid])
    ask()


@pytest.mark.engine
def test_a_server_checked_at_its_own_path_gets_requests_under_its_model_name(
    start_hearth: StartHearth, tmp_path: Path
) -> None:
    """The stand-in server takes its port from the environment, has no /health, and refuses any
    model name but its own, as vLLM and SGLang do."""
    entry = {
        "model": "echo-weights",
        "command": [sys.executable, str(ECHO_SERVER), "{host}", "served-name"],
        "env": {"ECHO_PORT": "{port}"},
        "health_path": "/v1/models",
        "served_model": "served-name",
        "aliases": ["gpt-echo"],
    }
    config = write_config(tmp_path, {"preload": ["echo"], "models": {"echo": entry}})
    server = start_hearth("--config", str(config))
    raw = server.openai().chat.completions.with_raw_response.create(
        model="gpt-echo", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
    )
    assert raw.headers["x-hearth-deployment"] == "echo"
    received = json.loads(raw.parse().choices[0].message.content or "{}")
    assert received["model"] == "served-name"
    assert received["messages"] == [{"role": "user", "content": "Hi"}]
    assert received["max_tokens"] == 5


def test_a_command_without_its_port_stops_hearth_at_start(
    start_hearth: StartHearth, tmp_path: Path
) -> None:
    entry = {"model": "m", "command": ["python3", "-m", "http.server"]}
    config = write_config(tmp_path, {"preload": [], "models": {"bad": entry}})
    server = start_hearth("--config", str(config), ready=False)
    assert server.proc.wait(timeout=60) != 0
    assert "models.bad.command: no {port} placeholder" in server.log()
