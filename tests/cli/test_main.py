"""`hearth --version`, `--help` and `hearth doctor`, run as a user would (a real subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hearth import __version__


def hearth(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hearth", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )


def test_version() -> None:
    result = hearth("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"hearth, version {__version__}"


def test_help_lists_the_commands() -> None:
    result = hearth("--help")
    assert result.returncode == 0
    for command in ("serve", "setup", "doctor"):
        assert f"  {command} " in result.stdout
    serve_help = hearth("serve", "--help").stdout
    for flag in ("--host", "--port", "--config", "--data-dir"):
        assert flag in serve_help


def test_doctor_reports_the_engine_and_its_version(llama_server_binary: Path) -> None:
    result = hearth("doctor", env={"HEARTH_LLAMA_SERVER": str(llama_server_binary)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(llama_server_binary) in result.stdout.replace("\n", "")
    assert "from setting" in result.stdout
    assert "version" in result.stdout


def test_doctor_says_what_is_missing_and_how_to_fix_it(tmp_path: Path) -> None:
    result = hearth(
        "doctor",
        # Wide enough that the table does not wrap the message.
        env={
            "HEARTH_LLAMA_SERVER": str(tmp_path / "nope"),
            "PATH": "/usr/bin:/bin",
            "COLUMNS": "300",
        },
    )
    assert result.returncode == 1
    assert "missing" in result.stdout
    assert "not an executable file" in result.stdout


def test_a_typo_in_the_config_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text("prot: 9000\n")
    result = hearth("serve", "--config", str(config))
    assert result.returncode == 1
    assert "unknown setting 'prot'" in result.stderr
    assert "Traceback" not in result.stderr
