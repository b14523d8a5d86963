"""Which Hearth `hearth chat` and `hearth run` talk to: --url or HEARTH_URL, else the one the
settings describe, else (when none answers there) a child `hearth serve` on a free loopback port,
stopped on exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
from rich.console import Console

from hearth.cli.chat_client import ChatClient, ChatError
from hearth.cli.options import settings_from, settings_options
from hearth.cli.running import server_url
from hearth.engines.ports import free_port

F = TypeVar("F", bound=Callable[..., Any])

READY_TIMEOUT_S = 300.0  # the first start assembles the bundled model and loads it


def connection_options(func: F) -> F:
    func = settings_options(func)
    func = click.option(
        "--api-key", envvar=["HEARTH_API_KEY", "OPENAI_API_KEY"], show_envvar=True,
        help="The key to send (not needed while the server has none).",
    )(func)  # fmt: skip
    func = click.option(
        "--url", envvar="HEARTH_URL", show_envvar=True,
        help="A running Hearth (or any OpenAI-compatible server).  [default: the one the "
        "settings describe; started for this session if none answers]",
    )(func)  # fmt: skip
    return func


@contextmanager
def connect(
    url: str | None, api_key: str | None, config_file: Path | None, data_dir: Path | None
) -> Iterator[ChatClient]:
    """A client for the Hearth to use; a child server started here is stopped on leaving."""
    if url is not None:
        client = ChatClient(url, api_key)
        try:
            yield client
        finally:
            client.close()
        return
    settings = settings_from(config_file, data_dir=data_dir)
    client = ChatClient(server_url(settings), api_key)
    if client.answers():
        try:
            yield client
        finally:
            client.close()
        return
    client.close()
    child = ChildServer(config_file, data_dir, settings.logs_dir / "chat-serve.log")
    try:
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"no Hearth answers at {server_url(settings)}: starting one at {child.url} "
            "for this session…",
            style="dim",
            markup=False,
        )
        child.wait_ready()
        client = ChatClient(child.url, api_key)
        try:
            yield client
        finally:
            client.close()
    finally:
        child.stop()


class ChildServer:
    """`hearth serve` as a child on a free loopback port, in its own session: a Ctrl-C in the
    terminal stops an answer, never the server."""

    def __init__(self, config_file: Path | None, data_dir: Path | None, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        argv = [sys.executable, "-m", "hearth", "serve", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port)]
        if config_file is not None:
            argv += ["--config", str(config_file)]
        if data_dir is not None:
            argv += ["--data-dir", str(data_dir)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(os.environ),
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ChatError(
                        f"hearth serve exited with {self.proc.returncode}: {self._last_line()} "
                        f"(log: {self.log_path})"
                    )
                try:
                    if http.get(f"{self.url}/ready").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        raise ChatError(f"hearth serve was not ready within {timeout:.0f}s (log: {self.log_path})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _last_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""
