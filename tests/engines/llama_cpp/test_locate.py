"""Finding llama-server: the setting, then PATH, then Hearth's tools folder; clear errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hearth.engines.llama_cpp.locate import (
    RPC_BINARY_NAME,
    LocatedBinary,
    engine_version,
    locate_llama_server,
    locate_rpc_server,
    tools_binary,
)
from hearth.errors import SetupError


def fake_binary(path: Path, output: str = "version: 42 (abc123)", code: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{output}' >&2\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_setting_wins_over_path_and_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = fake_binary(tmp_path / "bin" / "llama-server")
    configured = fake_binary(tmp_path / "mine" / "llama-server")
    monkeypatch.setenv("PATH", str(on_path.parent))
    found = locate_llama_server(configured, tmp_path / "tools")
    assert (found.path, found.source) == (configured, "setting")


def test_path_wins_over_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = fake_binary(tmp_path / "bin" / "llama-server")
    fake_binary(tools_binary(tmp_path / "tools"))
    monkeypatch.setenv("PATH", str(on_path.parent))
    found = locate_llama_server(None, tmp_path / "tools")
    assert (found.path, found.source) == (on_path, "PATH")


def test_tools_folder_is_the_last_resort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = fake_binary(tools_binary(tmp_path / "tools"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    found = locate_llama_server(None, tmp_path / "tools")
    assert (found.path, found.source) == (built, "tools")


def test_nothing_found_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SetupError, match=r"hearth setup.*HEARTH_LLAMA_SERVER"):
        locate_llama_server(None, tmp_path / "tools")
    with pytest.raises(SetupError, match="not an executable file"):
        locate_llama_server(tmp_path / "missing", tmp_path / "tools")


def test_engine_version_parses_the_version_line(tmp_path: Path) -> None:
    assert engine_version(fake_binary(tmp_path / "ok")) == "42 (abc123)"
    with pytest.raises(SetupError, match="failed"):
        engine_version(fake_binary(tmp_path / "bad", output="boom", code=3))


def test_the_real_engine_reports_a_version(llama_server_binary: Path) -> None:
    assert engine_version(llama_server_binary)


def test_rpc_server_is_found_like_llama_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = fake_binary(tools_binary(tmp_path / "tools", RPC_BINARY_NAME))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert locate_rpc_server(None, tmp_path / "tools") == LocatedBinary(built, "tools")
    on_path = fake_binary(tmp_path / "bin" / RPC_BINARY_NAME)
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert locate_rpc_server(None, tmp_path / "tools") == LocatedBinary(on_path, "PATH")
    configured = fake_binary(tmp_path / "mine" / "rpc-server")
    assert locate_rpc_server(configured, tmp_path / "tools").source == "setting"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SetupError, match=r"rpc-server was not found.*hearth setup"):
        locate_rpc_server(None, tmp_path / "elsewhere")
