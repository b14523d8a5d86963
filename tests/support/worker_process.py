"""The transformers worker run as a real process, from the command line its launcher builds (as
Hearth's supervisor would start it), for the worker tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from hearth.engines.ports import free_port
from hearth.engines.transformers.folder import inspect_folder
from hearth.engines.transformers.launcher import TransformersLauncher

READY_TIMEOUT_S = 240


@contextlib.contextmanager
def running_worker(folder: Path, name: str, log_path: Path) -> Iterator[str]:
    """The base URL of a worker serving `folder` as `name` (one thread), once it is ready; the
    process is stopped on exit. Its output goes to `log_path`."""
    info = inspect_folder(folder)
    launcher = TransformersLauncher(folder, name, info.task, info.capabilities(), threads=1)
    port = free_port("127.0.0.1")
    command = launcher.command("127.0.0.1", port)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command.argv, env={**os.environ, **command.env}, stdout=log, stderr=subprocess.STDOUT
        )
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while True:
                assert process.poll() is None, f"the worker exited: see {log_path}"
                assert time.monotonic() < deadline, (
                    f"the worker was not ready in {READY_TIMEOUT_S} s"
                )
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base_url + command.health_path, timeout=2).status_code == 200:
                        break
                time.sleep(0.2)
            yield base_url
        finally:
            process.terminate()
            process.wait(30)
