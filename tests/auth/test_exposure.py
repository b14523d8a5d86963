"""Secure by default: no keys means loopback only, unless --no-auth says otherwise."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from support.access import create_key
from support.hearth_server import StartHearth
from support.ports import free_port


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "hearth.yaml"
    config.write_text("preload: []\n")
    port = str(free_port())
    argv = [sys.executable, "-m", "hearth", "serve", "--config", str(config), "--port", port]
    return subprocess.run(
        [*argv, "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_non_loopback_bind_without_keys_refuses_to_start(tmp_path: Path) -> None:
    started = time.monotonic()
    result = serve(tmp_path, "--host", "0.0.0.0")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "refusing to listen on 0.0.0.0 without API keys" in output
    assert "hearth keys create" in output and "--no-auth" in output
    assert "Uvicorn running" not in output and "Application startup" not in output
    assert time.monotonic() - started < 30


def test_a_key_lets_it_listen_on_any_address(start_hearth: StartHearth, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'keys.db'}"
    _, key = create_key(database, "exposed")
    config = tmp_path / "hearth.yaml"
    config.write_text(f"preload: []\ndatabase_url: '{database}'\n")
    server = start_hearth("--host", "0.0.0.0", "--config", str(config))
    assert httpx.get(f"{server.base_url}/v1/models").status_code == 401
    answer = httpx.get(f"{server.base_url}/v1/models", headers={"authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    server.stop()


def test_no_auth_serves_openly_and_warns(start_hearth: StartHearth, tmp_path: Path) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text("preload: []\n")
    server = start_hearth("--host", "0.0.0.0", "--no-auth", "--config", str(config))
    assert httpx.get(f"{server.base_url}/v1/models").status_code == 200
    server.stop()
    assert "authentication is OFF" in server.log()


def test_loopback_without_keys_serves_as_before(start_hearth: StartHearth, tmp_path: Path) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text("preload: []\n")
    server = start_hearth("--config", str(config))
    assert httpx.get(f"{server.base_url}/v1/models").status_code == 200
    assert httpx.get(f"{server.base_url}/admin/keys").status_code == 200
    server.stop()
    assert "authentication is OFF" not in server.log()
