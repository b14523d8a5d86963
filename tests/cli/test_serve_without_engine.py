"""`hearth serve` without llama-server: a gateway of remote deployments starts and answers; a
local GGUF model answers 503 saying how to get the engine; preloading one is still refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from hearth.models.bundled import bundled_model_path
from support.hearth_server import HearthServer
from support.scripted_upstream import ScriptedUpstream

HI = [{"role": "user", "content": "Hi"}]


def without_engine(root: Path) -> dict[str, str]:
    """An environment where llama-server cannot be found: no HEARTH_* settings, only system
    folders on PATH, and an empty cache folder (where `hearth setup` would have put it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    return {**env, "PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(root / "empty-cache")}


def data_dir_with_bundled_model(root: Path, bundled_model_dir: Path) -> Path:
    """A data folder that already holds the bundled model (hard links: no 2 s assembly)."""
    models = root / "data" / "models"
    models.mkdir(parents=True)
    source = bundled_model_path(bundled_model_dir)
    for path in (source, source.with_name(source.name + ".sha256")):
        try:
            os.link(path, models / path.name)
        except OSError:
            shutil.copy2(path, models / path.name)
    return root / "data"


@pytest.fixture(scope="module")
def gateway(
    upstream: ScriptedUpstream,
    bundled_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HearthServer]:
    root = tmp_path_factory.mktemp("gateway-only")
    config = root / "hearth.yaml"
    config.write_text(
        "preload: []\n"
        f"deployments:\n  remote:\n    url: {upstream.url('remote')}\n"
        "routes:\n  local-first: {deployments: [gemma-3-270m, remote]}\n"
    )
    data_dir = data_dir_with_bundled_model(root, bundled_model_dir)
    server = HearthServer(data_dir, without_engine(root), ["--config", str(config)])
    server.wait_ready(timeout=60)
    yield server
    server.stop()


def test_a_gateway_starts_and_remote_deployments_answer(gateway: HearthServer) -> None:
    answer = gateway.openai().chat.completions.create(model="remote", messages=HI)
    assert answer.choices[0].message.content == "remote says hi"
    log = gateway.log()
    assert "engine: missing" in log
    assert "`hearth setup` builds llama-server" in log  # the one-line warning


@pytest.mark.parametrize("stream", [False, True])
def test_a_local_model_answers_503_naming_the_fix(gateway: HearthServer, stream: bool) -> None:
    client = gateway.openai()
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="gemma-3-270m", messages=HI, stream=stream)
    assert raised.value.status_code == 503
    error = raised.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error"
    assert "hearth setup" in error["message"]
    assert "HEARTH_LLAMA_SERVER" in error["message"]
    assert "No such file" not in error["message"]
    # The server stays healthy: remote deployments still answer, and nothing was logged as a crash.
    answer = client.chat.completions.create(model="remote", messages=HI)
    assert answer.choices[0].message.content == "remote says hi"
    assert httpx.get(f"{gateway.base_url}/ready", timeout=5).status_code == 200
    assert "Traceback" not in gateway.log()


def test_the_fix_is_still_named_after_many_requests(gateway: HearthServer) -> None:
    """A missing engine is not a failing one: it must not open the model's circuit breaker,
    which would answer "circuit open" instead of saying what to install."""
    for _ in range(8):  # more than the breaker's default 5 failures
        response = httpx.post(
            f"{gateway.base_url}/v1/chat/completions",
            json={"model": "gemma-3-270m", "messages": HI},
            timeout=10,
        )
        assert response.status_code == 503
        assert "hearth setup" in response.json()["error"]["message"]


def test_a_route_falls_back_past_the_local_model(gateway: HearthServer) -> None:
    answer = gateway.openai().chat.completions.with_raw_response.create(
        model="local-first", messages=HI
    )
    assert answer.headers["x-hearth-deployment"] == "remote"
    assert answer.parse().choices[0].message.content == "remote says hi"


def serve_until_it_exits(
    root: Path, config: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`hearth serve` with this config, expected to refuse to start."""
    (root / "hearth.yaml").write_text(config)
    argv = [sys.executable, "-m", "hearth", "serve", "--config", str(root / "hearth.yaml")]
    return subprocess.run(
        [*argv, "--data-dir", str(root / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    "config",
    [
        "preload: [gemma-3-270m]\n",
        # By an alias: the catalogue, not the name, says which engine serves it.
        "models: {small: {model: gemma-3-270m, aliases: [tiny]}}\npreload: [tiny]\n",
    ],
)
def test_preloading_a_local_model_without_the_engine_is_refused(
    tmp_path: Path, bundled_model_dir: Path, config: str
) -> None:
    data_dir_with_bundled_model(tmp_path, bundled_model_dir)
    result = serve_until_it_exits(tmp_path, config, without_engine(tmp_path))
    assert result.returncode == 1
    assert "llama-server was not found" in result.stderr
    assert "hearth setup" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_wrong_llama_server_setting_is_an_error_even_for_a_gateway(tmp_path: Path) -> None:
    env = {**without_engine(tmp_path), "HEARTH_LLAMA_SERVER": str(tmp_path / "no-such-binary")}
    result = serve_until_it_exits(tmp_path, "preload: []\n", env)
    assert result.returncode == 1
    assert "which is not an executable file" in result.stderr
    assert "Traceback" not in result.stderr
