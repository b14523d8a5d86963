"""One engine child process: spawn with its output in a log file, probe readiness, stop cleanly.

The child gets its own process group (so a terminal's Ctrl-C reaches Hearth, which then stops
engines in order) and, on Linux, a parent-death signal, so killing Hearth with SIGKILL does not
leave engines running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from hearth.engines.base import EngineCommand
from hearth.errors import EngineStartError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
LOG_ROTATE_BYTES = 20 * 1024 * 1024


def die_with_parent_hook(cpus: frozenset[int] | None = None) -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGKILL the child when Hearth dies, for any reason, and
    to keep it (and every thread it starts) on `cpus` when given."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        if cpus:
            # Before exec, so the engine's threads inherit it: setting it afterwards would
            # miss the threads it has already started.
            os.sched_setaffinity(0, cpus)

    return hook


def _open_log(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > LOG_ROTATE_BYTES:
        path.replace(path.with_name(path.name + ".1"))
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


START_MARK = "==== "  # begins the line written to the log at each start


def tail(path: Path, lines: int | None = 15) -> str:
    """The last lines of a log file (of its last 16 KiB with `lines=None`), for error messages."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return text if lines is None else "\n".join(text.splitlines()[-lines:])


def describe_exit(code: int) -> str:
    """'exited with code 1' or 'was killed by SIGSEGV' (negative codes are signals)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class EngineProcess:
    """A running engine. Create, `start()`, `wait_ready()`, then `wait()` or `stop()`."""

    def __init__(self, command: EngineCommand, host: str, port: int, log_path: Path) -> None:
        self.command = command
        self.host = host
        self.port = port
        self.log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    async def start(self) -> None:
        log_fd = _open_log(self.log_path)
        try:
            now = time.strftime("%Y-%m-%d %H:%M:%S")
            header = f"\n{START_MARK}{now} starting: {' '.join(self.command.argv)}\n"
            os.write(log_fd, header.encode())
            self._proc = await asyncio.create_subprocess_exec(
                *self.command.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **self.command.env},
                start_new_session=True,
                preexec_fn=die_with_parent_hook(self.command.cpus),
            )
        except OSError as exc:
            raise EngineStartError(f"cannot run {self.command.argv[0]}: {exc.strerror}") from None
        finally:
            os.close(log_fd)
        log.debug("engine pid %s started on port %s", self._proc.pid, self.port)

    async def wait_ready(self, client: httpx.AsyncClient, timeout: float) -> None:
        """Poll the health endpoint until it answers 200; fail early if the process exits or
        the endpoint does not exist (404)."""
        assert self._proc is not None
        url = self.base_url + self.command.health_path
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self._proc.returncode is not None:
                this_start = tail(self.log_path, lines=None).rpartition("\n" + START_MARK)[2]
                cause = self.command.explain_failure(this_start)
                lead = f"{cause}; the engine " if cause else "engine "
                raise EngineStartError(
                    f"{lead}{describe_exit(self._proc.returncode)} while loading; "
                    f"see {self.log_path}\n{tail(self.log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(url, timeout=2.0)
                if response.status_code == 200:
                    return
                if response.status_code == 404:
                    # Up, but without that endpoint: waiting longer will not help.
                    hint = self.command.health_hint
                    raise EngineStartError(
                        f"engine has no health check at {self.command.health_path} (it answers "
                        f"404 Not Found){'; ' + hint if hint else ''}; see {self.log_path}"
                    )
            if time.monotonic() > deadline:
                raise EngineStartError(
                    f"engine did not become ready within {timeout:.0f}s; see {self.log_path}\n"
                    f"{tail(self.log_path)}"
                )
            # Sleep on the process too, so an early exit is seen at once.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), delay)
            delay = min(delay * 2, 0.5)

    async def wait(self) -> int:
        assert self._proc is not None
        return await self._proc.wait()

    async def stop(self, grace: float) -> None:
        """SIGTERM the process group, then SIGKILL it after `grace` seconds."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.warning("engine pid %s ignored SIGTERM for %.0fs; killing it", proc.pid, grace)
            self._signal(signal.SIGKILL)
            await proc.wait()

    def kill_now(self) -> None:
        """Synchronous last resort, for interpreter exit."""
        if self._proc is not None and self._proc.returncode is None:
            self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)
