"""EngineSupervisor against the fault-injecting fake engine: readiness, restart of a dead or hung
engine, failure to start, stopping."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from hearth.engines.supervisor import EngineState, EngineSupervisor, SupervisorPolicy
from hearth.errors import UpstreamUnavailable
from support.fake_launcher import FakeLauncher

FAST = SupervisorPolicy(
    startup_timeout=30.0,
    shutdown_grace=2.0,
    backoff_initial=0.05,
    backoff_max=0.2,
    health_interval=0.2,
    health_timeout=1.0,
    health_failures=2,
)
CRASH_WHILE_LOADING = ["--stderr", "fatal: model file is corrupt", "--exit-code", "7"]


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def get_health(url: str) -> int:
    async with httpx.AsyncClient(trust_env=False) as client:
        return (await client.get(url + "/health")).status_code


@pytest.fixture
async def make_supervisor(log_path: Path) -> AsyncIterator[Callable[..., EngineSupervisor]]:
    """`make_supervisor(launcher, **policy_overrides)`: started; stopped at teardown."""
    made: list[EngineSupervisor] = []

    def make(launcher: FakeLauncher, **policy: float) -> EngineSupervisor:
        supervisor = EngineSupervisor("tiny", launcher, log_path, replace(FAST, **policy))
        made.append(supervisor)
        supervisor.start()
        return supervisor

    yield make
    for supervisor in made:
        await supervisor.stop()


async def test_goes_ready_and_endpoint_returns_the_engine_url(make_supervisor, log_path):
    launcher = FakeLauncher(["--busy-probes", "2"])
    supervisor = make_supervisor(launcher)

    # Asked while the engine is still loading: waits for it instead of failing.
    url = await asyncio.wait_for(supervisor.endpoint(), 30)

    assert supervisor.state is EngineState.READY
    assert supervisor.process is not None
    assert url == supervisor.process.base_url == f"http://127.0.0.1:{supervisor.process.port}"
    assert f"--port {supervisor.process.port}" in " ".join(launcher.commands[0].argv)
    assert "health 503\nhealth 503\nhealth 200\n" in log_path.read_text()
    assert await get_health(url) == 200
    assert supervisor.restarts == 0
    assert supervisor.last_error is None


async def test_a_killed_engine_is_restarted_and_endpoint_waits_for_it(
    make_supervisor, processes, caplog
):
    # The replacement takes a while to load, so the restart can be seen in progress.
    supervisor = make_supervisor(FakeLauncher([], ["--busy-for", "1"]))
    await asyncio.wait_for(supervisor.endpoint(), 30)
    first_pid = processes.track(supervisor.process.pid)

    caplog.set_level(logging.WARNING, logger="hearth.engines.supervisor")
    os.kill(first_pid, signal.SIGKILL)
    await eventually(lambda: supervisor.state is EngineState.RESTARTING, "RESTARTING")
    assert supervisor.last_error == "engine was killed by SIGKILL"

    waiter = asyncio.create_task(supervisor.endpoint())
    await asyncio.sleep(0.1)
    if supervisor.state is EngineState.RESTARTING:
        assert not waiter.done()
    url = await asyncio.wait_for(waiter, 30)

    assert supervisor.state is EngineState.READY
    assert supervisor.restarts == 1
    assert supervisor.process.pid != first_pid
    assert url == supervisor.process.base_url
    assert await get_health(url) == 200
    assert "engine was killed by SIGKILL; restarting" in caplog.text


async def test_an_engine_that_always_crashes_while_loading_fails_fast(
    make_supervisor, log_path, caplog
):
    caplog.set_level(logging.ERROR, logger="hearth.engines.supervisor")
    # A long backoff keeps it FAILED (rather than retrying) for the whole test.
    supervisor = make_supervisor(
        FakeLauncher(CRASH_WHILE_LOADING), startup_timeout=120, backoff_initial=60, backoff_max=60
    )

    with pytest.raises(UpstreamUnavailable) as raised:
        await asyncio.wait_for(supervisor.endpoint(), 20)  # well below startup_timeout
    assert supervisor.state is EngineState.FAILED
    message = raised.value.message
    assert message.startswith("model 'tiny' is not ready (engine failed)")
    assert "exited with code 7 while loading" in message
    assert str(log_path) in message
    assert raised.value.status_code == 503
    # The engine's own last words reach Hearth's log.
    assert "fatal: model file is corrupt" in caplog.text

    # While it stays FAILED, asking again fails at once.
    with pytest.raises(UpstreamUnavailable, match="exited with code 7 while loading"):
        await asyncio.wait_for(supervisor.endpoint(), 1)

    # Stopping interrupts the backoff.
    await asyncio.wait_for(supervisor.stop(), 10)
    assert supervisor.state is EngineState.STOPPED


async def test_a_failed_start_is_retried_with_backoff_until_ready(make_supervisor, caplog):
    caplog.set_level(logging.ERROR, logger="hearth.engines.supervisor")
    launcher = FakeLauncher(CRASH_WHILE_LOADING, CRASH_WHILE_LOADING, [])
    supervisor = make_supervisor(launcher)

    await eventually(lambda: supervisor.state is EngineState.READY, "READY")
    assert len(launcher.commands) == 3
    assert "failed to start (attempt 2)" in caplog.text
    assert supervisor.restarts == 0  # never ready before: not a restart
    assert supervisor.last_error is None
    assert await get_health(await supervisor.endpoint()) == 200


async def test_a_failing_restart_makes_endpoint_fail_fast(make_supervisor, processes):
    supervisor = make_supervisor(FakeLauncher([], CRASH_WHILE_LOADING), startup_timeout=120)
    await asyncio.wait_for(supervisor.endpoint(), 30)
    os.kill(processes.track(supervisor.process.pid), signal.SIGKILL)

    await eventually(lambda: supervisor.state is EngineState.FAILED, "FAILED")
    # It keeps retrying; whether caught FAILED or between two attempts, the answer comes quickly.
    with pytest.raises(UpstreamUnavailable, match="exited with code 7 while loading"):
        await asyncio.wait_for(supervisor.endpoint(), 20)
    assert supervisor.restarts == 1


async def test_a_hung_engine_is_replaced(make_supervisor, processes, log_path, caplog):
    caplog.set_level(logging.WARNING, logger="hearth.engines.supervisor")
    # Readiness takes one probe and the watch one more; from the third on, no answer ever comes.
    supervisor = make_supervisor(FakeLauncher(["--hang-after-probes", "2"], []), health_timeout=0.5)
    await asyncio.wait_for(supervisor.endpoint(), 30)
    hung_pid = processes.track(supervisor.process.pid)

    await eventually(lambda: supervisor.restarts == 1, "a restart")
    await eventually(lambda: supervisor.state is EngineState.READY, "READY again")
    assert supervisor.process.pid != hung_pid
    assert await processes.wait_gone(hung_pid, timeout=10)
    assert "engine stopped answering health checks (2 in a row); restarting" in caplog.text
    assert "health hang" in log_path.read_text()
    assert await get_health(await supervisor.endpoint()) == 200


async def test_a_busy_engine_answering_503_is_not_replaced(make_supervisor, log_path):
    supervisor = make_supervisor(FakeLauncher(["--busy-after-probes", "1"]))
    await asyncio.wait_for(supervisor.endpoint(), 30)
    pid = supervisor.process.pid

    # Well past health_failures probes answered 503 ("no free slot"): still the same engine.
    await eventually(
        lambda: log_path.read_text().count("health 503") > FAST.health_failures + 1,
        "503 answers",
    )
    assert supervisor.state is EngineState.READY
    assert supervisor.restarts == 0
    assert supervisor.process.pid == pid


async def test_stop_leaves_no_process(make_supervisor, processes, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    supervisor = make_supervisor(FakeLauncher(["--spawn-grandchild", str(pidfile)]))
    await asyncio.wait_for(supervisor.endpoint(), 30)
    engine_pid = processes.track(supervisor.process.pid)
    grandchild = processes.track(int(pidfile.read_text()))

    await asyncio.wait_for(supervisor.stop(), 10)

    assert supervisor.state is EngineState.STOPPED
    assert supervisor.process.returncode == -signal.SIGTERM
    assert await processes.wait_gone(engine_pid, timeout=5)
    assert await processes.wait_gone(grandchild, timeout=5)
    with pytest.raises(UpstreamUnavailable, match="shutting down"):
        await asyncio.wait_for(supervisor.endpoint(), 1)


async def test_stop_while_loading_kills_the_engine_and_starts_no_other(make_supervisor, processes):
    launcher = FakeLauncher(["--busy-probes", "100000"])
    supervisor = make_supervisor(launcher)
    await eventually(
        lambda: supervisor.process is not None and supervisor.process.pid is not None,
        "the engine process",
    )
    pid = processes.track(supervisor.process.pid)
    assert supervisor.state is EngineState.STARTING

    await asyncio.wait_for(supervisor.stop(), 10)
    assert await processes.wait_gone(pid, timeout=5)
    assert len(launcher.commands) == 1
    assert supervisor.state is EngineState.STOPPED


async def test_health_probes_ignore_proxy_settings(make_supervisor, monkeypatch):
    # Engines listen on loopback; a user's proxy (here: one that does not exist) must not be used.
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    supervisor = make_supervisor(FakeLauncher([]), startup_timeout=10)

    url = await asyncio.wait_for(supervisor.endpoint(), 30)
    assert supervisor.state is EngineState.READY
    assert url == supervisor.process.base_url


async def test_connection_failed_takes_a_dead_engine_out_of_service_at_once(
    make_supervisor, processes
):
    supervisor = make_supervisor(FakeLauncher([], ["--busy-for", "1"]))
    url = await asyncio.wait_for(supervisor.endpoint(), 30)

    # Alive: the failure was something else, the engine stays in service.
    assert await supervisor.connection_failed(url, within=0.2) is False
    assert supervisor.state is EngineState.READY

    os.kill(processes.track(supervisor.process.pid), signal.SIGKILL)
    assert await supervisor.connection_failed(url) is True
    assert supervisor.state is not EngineState.READY
    # The next caller waits for the replacement instead of getting the dead URL.
    new_url = await asyncio.wait_for(supervisor.endpoint(), 30)
    assert new_url != url
    assert supervisor.restarts == 1
    # A URL that was already replaced is reported as gone without waiting.
    assert await supervisor.connection_failed(url, within=5) is True
