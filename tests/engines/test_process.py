"""EngineProcess against the fault-injecting fake engine: readiness, log capture, start failures,
stopping (SIGTERM, SIGKILL, the whole process group) and dying with its parent."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from hearth.engines import process as process_module
from hearth.engines.base import EngineCommand, FailureHint
from hearth.engines.ports import free_port
from hearth.engines.process import EngineProcess
from hearth.errors import EngineStartError
from support.fake_launcher import fake_engine_argv


def health_lines(log_path: Path) -> list[str]:
    return [line for line in log_path.read_text().splitlines() if line.startswith("health ")]


async def test_wait_ready_polls_until_health_answers_200(make_engine, probe_client, log_path):
    engine = make_engine("--busy-probes", "3")
    await engine.start()
    await engine.wait_ready(probe_client, timeout=30)

    # The engine answered 503 three times; only the 200 after them counted as ready.
    assert health_lines(log_path) == ["health 503"] * 3 + ["health 200"]
    assert engine.returncode is None
    response = await probe_client.get(engine.base_url + "/health")
    assert response.status_code == 200


async def test_wait_ready_retries_while_the_port_is_still_closed(make_engine, probe_client):
    engine = make_engine("--load-time", "0.5")
    await engine.start()
    await engine.wait_ready(probe_client, timeout=30)
    assert (await probe_client.get(engine.base_url + "/health")).status_code == 200


async def test_child_runs_in_its_own_process_group(make_engine, probe_client):
    engine = make_engine()
    await engine.start()
    assert engine.pid is not None
    assert os.getpgid(engine.pid) == engine.pid
    assert os.getpgid(engine.pid) != os.getpgrp()


async def test_log_file_gets_a_start_header_and_both_output_streams(
    make_engine, probe_client, log_path
):
    engine = make_engine("--stdout", "said on stdout", "--stderr", "said on stderr")
    await engine.start()
    await engine.wait_ready(probe_client, timeout=30)
    await engine.stop(grace=5)

    text = log_path.read_text()
    header = re.compile(
        r"^==== \d{4}-\d\d-\d\d \d\d:\d\d:\d\d starting: "
        + re.escape(" ".join(engine.command.argv))
        + "$",
        re.MULTILINE,
    )
    match = header.search(text)
    assert match is not None, text
    output = text[match.end() :].splitlines()
    assert "said on stdout" in output
    assert "said on stderr" in output


async def test_log_file_is_appended_to_across_starts(make_engine, probe_client, log_path):
    for line in ("first run", "second run"):
        engine = make_engine("--stdout", line)
        await engine.start()
        await engine.wait_ready(probe_client, timeout=30)  # it has printed its line by now
        await engine.stop(grace=5)

    before, first_run, second_run = log_path.read_text().split("\n==== ")
    assert before == ""
    # Each start's header is followed by that run's own output line.
    assert " starting: " in first_run and "first run" in first_run.splitlines()
    assert " starting: " in second_run and "second run" in second_run.splitlines()


async def test_a_large_log_is_rotated_before_starting(make_engine, log_path, monkeypatch):
    monkeypatch.setattr(process_module, "LOG_ROTATE_BYTES", 100)
    log_path.parent.mkdir(parents=True)
    log_path.write_text("old line\n" * 20)
    engine = make_engine()
    await engine.start()
    await engine.stop(grace=5)

    assert log_path.with_name("engine.log.1").read_text() == "old line\n" * 20
    assert "old line" not in log_path.read_text()
    assert " starting: " in log_path.read_text()


async def test_exit_while_loading_raises_with_the_log_tail(make_engine, probe_client, log_path):
    engine = make_engine("--stderr", "error: unknown architecture 'gemma9'", "--exit-code", "3")
    await engine.start()
    with pytest.raises(EngineStartError) as raised:
        # Far below the readiness timeout: an exit is noticed at once, not at the deadline.
        await asyncio.wait_for(engine.wait_ready(probe_client, timeout=120), 20)

    message = str(raised.value)
    assert "exited with code 3 while loading" in message
    assert "error: unknown architecture 'gemma9'" in message
    assert str(log_path) in message
    assert engine.returncode == 3


async def test_exit_after_opening_the_port_but_before_ready_raises(make_engine, probe_client):
    engine = make_engine("--busy-probes", "100000", "--exit-code", "4", "--exit-after", "0.5")
    await engine.start()
    with pytest.raises(EngineStartError, match="exited with code 4") as raised:
        await asyncio.wait_for(engine.wait_ready(probe_client, timeout=120), 20)
    assert "fake engine: exiting with code 4" in str(raised.value)


async def test_not_ready_within_the_timeout_raises(make_engine, probe_client):
    engine = make_engine("--busy-probes", "100000")
    await engine.start()
    with pytest.raises(EngineStartError, match="did not become ready within 1s"):
        await engine.wait_ready(probe_client, timeout=0.6)
    assert engine.returncode is None  # still loading; stopping it is the caller's decision


async def test_a_missing_program_raises_engine_start_error(make_engine, probe_client):
    engine = make_engine(argv=["/nonexistent/hearth-engine", "--port", "1"])
    with pytest.raises(EngineStartError, match="cannot run /nonexistent/hearth-engine"):
        await engine.start()
    assert engine.pid is None
    await engine.stop(grace=1)  # nothing to stop: returns


async def test_stop_sends_sigterm_and_waits_for_the_exit(make_engine, probe_client, processes):
    engine = make_engine()
    await engine.start()
    await engine.wait_ready(probe_client, timeout=30)
    pid = processes.track(engine.pid)

    started = time.monotonic()
    await engine.stop(grace=60)
    assert time.monotonic() - started < 30  # it exited on SIGTERM; the grace was not waited out
    assert engine.returncode == -signal.SIGTERM
    assert not processes.alive(pid)


async def test_stop_escalates_to_sigkill_after_the_grace(make_engine, probe_client, processes):
    engine = make_engine("--ignore-sigterm")
    await engine.start()
    await engine.wait_ready(probe_client, timeout=30)  # the handler is installed by now
    pid = processes.track(engine.pid)

    grace = 0.5
    started = time.monotonic()
    await asyncio.wait_for(engine.stop(grace=grace), grace + 20)
    elapsed = time.monotonic() - started
    assert engine.returncode == -signal.SIGKILL
    assert not processes.alive(pid)
    assert grace * 0.9 <= elapsed < grace + 10


async def test_stop_kills_the_whole_process_group(make_engine, probe_client, processes, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    engine = make_engine("--spawn-grandchild", str(pidfile))
    await engine.start()
    await engine.wait_ready(probe_client, timeout=30)
    grandchild = processes.track(int(pidfile.read_text()))
    assert processes.alive(grandchild)
    assert os.getpgid(grandchild) == engine.pid

    await engine.stop(grace=5)
    assert await processes.wait_gone(grandchild, timeout=5)


async def test_kill_now_kills_at_once(make_engine, probe_client):
    engine = make_engine("--ignore-sigterm")
    await engine.start()
    await engine.wait_ready(probe_client, timeout=30)
    engine.kill_now()
    assert await asyncio.wait_for(engine.wait(), 10) == -signal.SIGKILL


async def test_wait_returns_the_exit_code_and_stop_after_exit_returns(make_engine, probe_client):
    engine = make_engine("--exit-code", "5", "--exit-after", "1")
    await engine.start()
    await engine.wait_ready(probe_client, timeout=30)
    assert await asyncio.wait_for(engine.wait(), 20) == 5
    await asyncio.wait_for(engine.stop(grace=60), 1)
    assert engine.returncode == 5


# Started in its own interpreter, which the test then SIGKILLs: the engine must not outlive it.
_PARENT = """
import asyncio, json, sys
from pathlib import Path
from hearth.engines.base import EngineCommand
from hearth.engines.process import EngineProcess

async def main():
    spec = json.loads(sys.argv[1])
    engine = EngineProcess(EngineCommand(argv=spec["argv"]), "127.0.0.1", spec["port"],
                           Path(spec["log"]))
    await engine.start()
    print(engine.pid, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
async def test_engine_dies_when_its_parent_is_killed(log_path, processes):
    port = free_port()
    spec = json.dumps(
        {"argv": fake_engine_argv("127.0.0.1", port), "port": port, "log": str(log_path)}
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PARENT, spec, stdout=asyncio.subprocess.PIPE
    )
    processes.track(parent.pid)
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(parent.stdout.readline(), 30)
        engine_pid = processes.track(int(line))
        # It is up and serving before its parent dies.
        async with httpx.AsyncClient(trust_env=False) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the fake engine never became ready"
                await asyncio.sleep(0.05)
    finally:
        parent.kill()
        await parent.communicate()

    assert parent.returncode == -signal.SIGKILL
    assert await processes.wait_gone(engine_pid, timeout=10)


async def test_a_known_cause_in_the_log_leads_the_start_error(probe_client, log_path, processes):
    # A cause printed by an earlier start must not be blamed for this one.
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("\n==== earlier starting: x\nrpc.cpp: Failed to connect to 10.0.0.9:1\n")
    port = free_port()
    hints = (FailureHint("Failed to connect to", "a worker did not answer ({line})"),)

    def start_failing(message: str) -> EngineProcess:
        argv = fake_engine_argv("127.0.0.1", port, "--stderr", message, "--exit-code", "6")
        return EngineProcess(EngineCommand(argv, failure_hints=hints), "127.0.0.1", port, log_path)

    engine = start_failing("error: out of memory")
    await engine.start()
    with pytest.raises(EngineStartError) as raised:
        await asyncio.wait_for(engine.wait_ready(probe_client, timeout=120), 20)
    assert str(raised.value).startswith("engine exited with code 6 while loading")

    engine = start_failing("ggml-rpc.cpp:547: Failed to connect to 127.0.0.1:1")
    await engine.start()
    with pytest.raises(EngineStartError) as raised:
        await asyncio.wait_for(engine.wait_ready(probe_client, timeout=120), 20)
    first_line = str(raised.value).splitlines()[0]
    assert first_line.startswith("a worker did not answer (Failed to connect to 127.0.0.1:1)")
    assert "exited with code 6 while loading" in first_line
