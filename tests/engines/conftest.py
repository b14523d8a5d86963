"""Fixtures for engine tests: EngineProcess on the fake engine, and a watch over the processes a
test starts, so that none outlives it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from hearth.engines.base import EngineCommand
from hearth.engines.ports import free_port
from hearth.engines.process import EngineProcess
from support.fake_launcher import fake_engine_argv


def pid_alive(pid: int) -> bool:
    """Whether a process runs; a zombie (killed, not yet reaped by anyone) counts as gone."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


class Processes:
    """The pids a test started. Whatever is still alive at teardown is killed, by pid, if it is
    still the same program."""

    def __init__(self) -> None:
        self._tracked: dict[int, bytes | None] = {}

    def track(self, pid: int) -> int:
        self._tracked[pid] = _cmdline(pid)
        return pid

    alive = staticmethod(pid_alive)

    async def wait_gone(self, pid: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def kill_leftovers(self) -> list[int]:
        killed = []
        for pid, cmdline in self._tracked.items():
            if pid_alive(pid) and _cmdline(pid) == cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return killed


@pytest.fixture
def processes() -> Iterator[Processes]:
    watch = Processes()
    yield watch
    watch.kill_leftovers()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "engine.log"


@pytest.fixture
async def probe_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
async def make_engine(
    log_path: Path, processes: Processes
) -> AsyncIterator[Callable[..., EngineProcess]]:
    """`make_engine(*options)`: an unstarted EngineProcess for the fake engine on a free port.
    Every one made is stopped at teardown."""
    made: list[EngineProcess] = []

    def make(*options: str, argv: list[str] | None = None) -> EngineProcess:
        port = free_port()
        command = EngineCommand(argv=argv or fake_engine_argv("127.0.0.1", port, *options))
        engine = EngineProcess(command, "127.0.0.1", port, log_path)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.stop(grace=1.0)
