"""The admin key as documented: `auth.admin_key: env:HEARTH_ADMIN_KEY` starts Hearth (the variable
is a secret, not a setting); an empty `env:` reference and a key under 16 characters are refused
at start with the rule named; a presented key that short is refused."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from support.hearth_server import HearthServer, StartHearth

ADMIN = "hearth-admin-key-for-tests-8d2f"


def write_config(tmp_path: Path, admin_key: str) -> Path:
    config = tmp_path / "hearth.yaml"
    config.write_text(f"preload: []\nauth: {{admin_key: '{admin_key}'}}\n")
    return config


def refused_start(server: HearthServer) -> str:
    assert server.proc.wait(timeout=60) == 1
    return server.log()


def test_the_documented_admin_key_variable_starts_hearth(
    start_hearth: StartHearth, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "env:HEARTH_ADMIN_KEY")
    server = start_hearth("--config", str(config), env={"HEARTH_ADMIN_KEY": ADMIN})
    keys = f"{server.base_url}/admin/keys"
    assert httpx.get(keys, headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200
    assert httpx.get(keys, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(keys, headers={"authorization": "Bearer " + ADMIN[:15]}).status_code == 401
    server.stop()


@pytest.mark.parametrize(
    ("admin_key", "env", "problem"),
    [
        ("env:", {}, "auth.admin_key: 'env:' names no variable; write env:NAME"),
        ("file:", {}, "auth.admin_key: 'file:' names no file; write file:PATH"),
        ("env:HEARTH_ADMIN_KEY", {"HEARTH_ADMIN_KEY": "x"}, "at least 16 characters"),
        ("short-admin-key", {}, "at least 16 characters long (it has 15)"),
    ],
)
def test_unusable_admin_keys_stop_hearth_naming_the_rule(
    start_hearth: StartHearth, tmp_path: Path, admin_key: str, env: dict[str, str], problem: str
) -> None:
    config = write_config(tmp_path, admin_key)
    log = refused_start(start_hearth("--config", str(config), env=env, ready=False))
    assert problem in log, log
    assert "Traceback" not in log
