"""EngineSupervisor running an engine's process hooks (the fake engine's): extra start flags,
after-ready before any request gets through, before-stop only for a live, ready engine, and
neither ever holding up a load or an unload for longer than the hook timeout."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from hearth.engines.base import EngineCommand
from hearth.engines.supervisor import EngineState, EngineSupervisor, SupervisorPolicy
from support.fake_launcher import FakeLauncher

FAST = SupervisorPolicy(
    startup_timeout=30.0,
    shutdown_grace=2.0,
    backoff_initial=0.05,
    backoff_max=0.2,
    health_interval=0.2,
    health_timeout=1.0,
    health_failures=2,
    hook_timeout=1.0,
)


@dataclass
class RecordingHooks:
    """Records what the supervisor called, and what it saw at the time."""

    after_ready_delay: float = 0.0
    before_stop_delay: float = 0.0
    fail: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)
    seen: list[object] = field(default_factory=list)
    supervisor: EngineSupervisor | None = None

    def start_args(self, name: str) -> list[str]:
        self.calls.append(("start_args", name))
        return ["--stdout", f"started as {name}"]

    async def after_ready(self, name: str, base_url: str) -> None:
        self.calls.append(("after_ready", name))
        assert self.supervisor is not None
        self.seen.append(self.supervisor.state)
        await asyncio.sleep(self.after_ready_delay)
        if self.fail:
            raise RuntimeError("restore broke")

    async def before_stop(self, name: str, base_url: str) -> None:
        self.calls.append(("before_stop", name))
        async with httpx.AsyncClient(trust_env=False) as client:  # the engine is still up
            self.seen.append((await client.get(base_url + "/health")).status_code)
        await asyncio.sleep(self.before_stop_delay)
        if self.fail:
            raise RuntimeError("save broke")


class HookedLauncher(FakeLauncher):
    def __init__(self, hooks: RecordingHooks) -> None:
        super().__init__()
        self.hooks = hooks

    def command(self, host: str, port: int) -> EngineCommand:
        return replace(super().command(host, port), hooks=self.hooks)


def supervise(hooks: RecordingHooks, log_path: Path, **policy: float) -> EngineSupervisor:
    supervisor = EngineSupervisor(
        "tiny#1", HookedLauncher(hooks), log_path, replace(FAST, **policy)
    )
    hooks.supervisor = supervisor
    supervisor.start()
    return supervisor


async def test_hooks_run_around_a_ready_engine(log_path: Path) -> None:
    hooks = RecordingHooks(after_ready_delay=0.3)
    supervisor = supervise(hooks, log_path)
    asked = time.monotonic()
    await asyncio.wait_for(supervisor.endpoint(), 30)

    # Requests wait for the after-ready hook: it ran while the engine was still "starting".
    assert time.monotonic() - asked >= 0.3
    assert hooks.seen == [EngineState.STARTING]
    assert "started as tiny#1" in log_path.read_text()  # start_args reached the command line
    await supervisor.stop()

    assert hooks.calls == [
        ("start_args", "tiny#1"),
        ("after_ready", "tiny#1"),
        ("before_stop", "tiny#1"),
    ]
    assert hooks.seen[-1] == 200  # saved from a live engine, before it was stopped


async def test_slow_or_failing_hooks_never_hold_up_a_load_or_an_unload(
    log_path: Path, caplog
) -> None:
    caplog.set_level(logging.WARNING, "hearth.engines.supervisor")
    slow = RecordingHooks(after_ready_delay=60, before_stop_delay=60)
    supervisor = supervise(slow, log_path, hook_timeout=0.5)
    started = time.monotonic()
    await asyncio.wait_for(supervisor.endpoint(), 30)
    await supervisor.stop()
    assert time.monotonic() - started < 10
    assert "after-ready hook gave up after" in caplog.text
    assert "before-stop hook gave up after" in caplog.text
    assert supervisor.process is not None and supervisor.process.returncode is not None

    failing = RecordingHooks(fail=True)
    supervisor = supervise(failing, log_path.with_name("second.log"))
    await asyncio.wait_for(supervisor.endpoint(), 30)
    assert supervisor.state is EngineState.READY
    await supervisor.stop()
    assert "after-ready hook failed: RuntimeError: restore broke" in caplog.text
    assert "before-stop hook failed: RuntimeError: save broke" in caplog.text


async def test_nothing_is_saved_from_a_crashed_engine(log_path: Path) -> None:
    hooks = RecordingHooks()
    supervisor = supervise(hooks, log_path, health_interval=30)
    await asyncio.wait_for(supervisor.endpoint(), 30)
    process = supervisor.process
    assert process is not None and process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()  # dead; the supervisor's watch may not have noticed yet

    await supervisor.stop()
    assert ("before_stop", "tiny#1") not in hooks.calls


async def test_a_stop_while_loading_saves_nothing(log_path: Path) -> None:
    hooks = RecordingHooks(after_ready_delay=60)
    supervisor = supervise(hooks, log_path)
    while ("after_ready", "tiny#1") not in hooks.calls:
        await asyncio.sleep(0.01)
    await supervisor.stop()
    assert [name for name, _ in hooks.calls] == ["start_args", "after_ready"]
