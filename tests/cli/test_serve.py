"""`hearth serve` as a process: clean shutdown, no orphaned engines, clear start-up errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.hearth_server import StartHearth


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            # A zombie still answers kill(0); it is dead for our purposes once reaped or Z.
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.1)
    return False


def test_sigterm_stops_the_engine_and_exits_cleanly(start_hearth: StartHearth) -> None:
    server = start_hearth()
    (engine,) = server.engine_pids()
    # uvicorn re-raises the signal after its graceful shutdown, so the exit reads as SIGTERM.
    assert server.stop() in (0, -signal.SIGTERM)
    assert _gone(engine, within=5)
    log = server.log()
    assert "stopping engines" in log
    assert "Application shutdown complete" in log


def test_sigkill_of_hearth_leaves_no_orphaned_engine(start_hearth: StartHearth) -> None:
    server = start_hearth()
    (engine,) = server.engine_pids()
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    assert _gone(engine, within=5), "the engine outlived a SIGKILLed Hearth"


def test_engine_output_goes_to_a_log_file_in_the_data_dir(start_hearth: StartHearth) -> None:
    server = start_hearth()
    log = (server.data_dir / "logs" / "gemma-3-270m.log").read_text()
    assert "starting:" in log  # Hearth's header with the command line
    assert "llama" in log.lower()  # the engine's own output


def test_missing_engine_binary_is_a_clear_error(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")},
        "PATH": "/usr/bin:/bin",
        "XDG_CACHE_HOME": str(tmp_path / "empty-cache"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "hearth", "serve", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "llama-server was not found" in result.stderr
    assert "hearth setup" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_mistake_in_a_models_settings_is_one_line_before_binding(
    tmp_path: Path, llama_server_binary: Path
) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text(
        "models:\n  custom: {engine: command, model: x, command: [/bin/true, -p, '8']}\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")},
        "HEARTH_LLAMA_SERVER": str(llama_server_binary),
    }
    result = subprocess.run(
        [sys.executable, "-m", "hearth", "serve", "--config", str(config), "--port", "0",
         "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "models.custom" in result.stderr and "{port}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
