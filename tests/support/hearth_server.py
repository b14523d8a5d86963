"""A real `hearth serve` subprocess for integration tests (like vLLM's RemoteOpenAIServer)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from support.ports import free_port


class HearthServer:
    """A real `hearth serve` subprocess on a free loopback port."""

    def __init__(self, data_dir: Path, env: dict[str, str], args: list[str]) -> None:
        self.data_dir = data_dir
        self.env = env
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "hearth-serve.log"
        self._client: openai.OpenAI | None = None
        argv = [sys.executable, "-m", "hearth", "serve", "--port", str(self.port)]
        argv += ["--data-dir", str(data_dir), *args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def openai(self) -> openai.OpenAI:
        """An `openai` SDK client for this server (no retries: tests see every failure);
        closed when the server stops."""
        if self._client is None:
            self._client = openai.OpenAI(
                base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0
            )
        return self._client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"hearth serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"hearth serve was not ready within {timeout}s:\n{self.log()}")

    def engine_pids(self) -> list[int]:
        """Pids of the llama-server children of this Hearth process."""
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                try:
                    if Path(f"/proc/{child}/comm").read_text().strip() == "llama-server":
                        pids.append(child)
                except OSError:
                    continue
        return pids

    def stop(self) -> int:
        if self._client is not None:
            self._client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


StartHearth = Callable[..., HearthServer]
