"""`hearth rpc-worker`: the rpc-server command line it builds, the warning beyond loopback, and
the real rpc-server supervised (its tensor cache in the data folder, stopped by SIGTERM)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

from hearth.cli.rpc_worker import DEFAULT_HOST, exposure_warning, rpc_server_argv
from support.ports import free_port


def worker(
    *args: str, rpc_server: Path, data_dir: Path, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hearth", "rpc-worker", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HEARTH_RPC_SERVER": str(rpc_server)},
        check=False,
    )


def recording_rpc_server(tmp_path: Path, code: int = 0) -> Path:
    """A stand-in rpc-server that writes down its arguments and exits: it lets the tests see
    the command line the defaults build without binding the fixed default port 50052."""
    path = tmp_path / "rpc-server"
    path.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/argv"\n'
        f'echo "LLAMA_CACHE=$LLAMA_CACHE" >> "{tmp_path}/argv"\nexit {code}\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_only_loopback_goes_without_the_warning() -> None:
    assert exposure_warning(IPv4Address("127.0.0.1"), 50052) is None
    assert exposure_warning(IPv4Address("127.0.0.2"), 50052) is None
    everywhere = exposure_warning(IPv4Address("0.0.0.0"), 50052)
    assert everywhere is not None
    assert "every network interface" in everywhere
    private = exposure_warning(IPv4Address("10.1.2.3"), 7000)
    assert private is not None
    for words in ("10.1.2.3, port 7000", "NO authentication", "private network", "tunnel"):
        assert words in private


def test_the_rpc_server_command_line() -> None:
    binary = Path("/opt/rpc-server")
    assert rpc_server_argv(binary, IPv4Address("127.0.0.1"), 50052) == [
        "/opt/rpc-server", "--host", "127.0.0.1", "--port", "50052",
    ]  # fmt: skip
    assert rpc_server_argv(
        binary, IPv4Address("10.0.0.2"), 7000, threads=3, devices="CUDA0,CUDA1", cache=True
    ) == [
        "/opt/rpc-server", "--host", "10.0.0.2", "--port", "7000",
        "--threads", "3", "--device", "CUDA0,CUDA1", "--cache",
    ]  # fmt: skip


def test_by_default_it_binds_loopback_quietly(tmp_path: Path) -> None:
    assert DEFAULT_HOST == "127.0.0.1"
    result = worker(rpc_server=recording_rpc_server(tmp_path), data_dir=tmp_path / "data")
    assert result.returncode == 0, result.stderr
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[:4] == ["--host", "127.0.0.1", "--port", "50052"]
    assert "--cache" not in argv and "LLAMA_CACHE=" in argv
    assert "WARNING" not in result.stderr


def test_a_public_address_is_warned_about_and_a_name_refused(tmp_path: Path) -> None:
    fake = recording_rpc_server(tmp_path)
    result = worker("--host", "0.0.0.0", rpc_server=fake, data_dir=tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert "NO authentication" in result.stderr
    assert (tmp_path / "argv").read_text().splitlines()[:2] == ["--host", "0.0.0.0"]
    named = worker("--host", "example.com", rpc_server=fake, data_dir=tmp_path / "data")
    assert named.returncode == 2
    assert "IPv4 addresses only" in named.stderr


def test_its_failure_is_reported_with_its_exit_code(tmp_path: Path) -> None:
    result = worker(rpc_server=recording_rpc_server(tmp_path, code=3), data_dir=tmp_path / "d")
    assert result.returncode == 3
    assert "rpc-server exited with code 3" in result.stderr


def test_a_missing_rpc_server_says_to_run_setup(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hearth", "rpc-worker", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")},
        check=False,
    )
    assert result.returncode == 1
    assert "hearth setup" in result.stderr and "HEARTH_RPC_SERVER" in result.stderr


def _children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def test_the_real_rpc_server_caches_in_the_data_folder_and_stops_on_sigterm(
    rpc_server_binary: Path, tmp_path: Path
) -> None:
    port = free_port()
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hearth", "rpc-worker", "--port", str(port), "--cache",
             "--threads", "1", "--data-dir", str(tmp_path / "data")],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "HEARTH_RPC_SERVER": str(rpc_server_binary)},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                # A client that hangs up at once: rpc-server then flushes what it printed.
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        (rpc_server,) = _children(proc.pid)
        deadline = time.monotonic() + 10
        while "Client connection closed" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        output = log_path.read_text()
        assert f"local cache    : {tmp_path / 'data' / 'llama.cpp' / 'rpc'}" in output
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log_path.read_text()
        assert "rpc-server stopped" in log_path.read_text()
        assert not Path(f"/proc/{rpc_server}").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_doctor_says_which_workers_answer(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        up = f"127.0.0.1:{listener.getsockname()[1]}"
        down = f"127.0.0.1:{free_port()}"  # nothing listens there
        config = tmp_path / "hearth.yaml"
        config.write_text(
            f'models:\n  a:\n    model: gemma-3-270m\n    rpc: ["{up}", "{down}"]\n'
            f'  b:\n    model: gemma-3-270m\n    rpc: ["{up}"]\n'
        )
        result = subprocess.run(
            [sys.executable, "-m", "hearth", "doctor", "--config", str(config),
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "COLUMNS": "250"},
        )  # fmt: skip
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "unreachable" not in rows[f"RPC worker {up}"]
    assert "reachable" in rows[f"RPC worker {up}"] and "for a, b" in rows[f"RPC worker {up}"]
    assert "unreachable" in rows[f"RPC worker {down}"]
    assert "hearth rpc-worker" in rows[f"RPC worker {down}"]
