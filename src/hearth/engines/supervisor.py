"""Keeps one engine process alive: start, wait for readiness, restart with backoff, stop.

Requests ask `endpoint()` for the engine's URL; it waits while the engine loads or restarts and
fails fast, with the engine's own last words, when starting keeps failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from hearth.engines.base import EngineCommand, Launcher
from hearth.engines.ports import free_port
from hearth.engines.process import EngineProcess, describe_exit
from hearth.errors import EngineStartError, EngineUnavailable

log = logging.getLogger(__name__)

# A process that stayed up this long is considered healthy again: its next crash restarts at once.
STABLE_AFTER_S = 60.0


class EngineState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"  # the last start failed; retrying in the background with backoff


@dataclass(frozen=True)
class SupervisorPolicy:
    startup_timeout: float = 180.0
    shutdown_grace: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    health_interval: float = 15.0
    health_timeout: float = 10.0
    health_failures: int = 3  # consecutive failed probes before a hung engine is replaced
    # Longest an engine's after-ready or before-stop hook may take (restoring or saving its
    # prompt caches): a load or an unload is never held up for longer.
    hook_timeout: float = 10.0


class EngineSupervisor:
    def __init__(
        self,
        name: str,
        launcher: Launcher,
        log_path: Path,
        policy: SupervisorPolicy,
        host: str = "127.0.0.1",
        on_ready: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self.launcher = launcher
        self.log_path = log_path
        self.policy = policy
        self.host = host
        self.on_ready = on_ready  # called with the load time in seconds, each time it is ready
        self.state = EngineState.STOPPED
        self.restarts = 0
        self.last_error: str | None = None
        self.ready_since: float | None = None
        self._process: EngineProcess | None = None
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        # Engines are on loopback: never route the probes through a user's HTTP proxy.
        # No keep-alive: probes are seconds apart, past llama-server's 5 s idle limit, and a
        # connection closing as a probe reuses it would count as a missed probe.
        self._probe = httpx.AsyncClient(
            timeout=policy.health_timeout,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    @property
    def process(self) -> EngineProcess | None:
        return self._process

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"engine:{self.name}")

    async def endpoint(self) -> str:
        """The base URL of the ready engine, waiting for a load or restart in progress."""
        deadline = time.monotonic() + self.policy.startup_timeout
        while not self._ready.is_set():
            if self.state is EngineState.FAILED or self._stopping:
                raise EngineUnavailable(self._unavailable_message())
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EngineUnavailable(self._unavailable_message())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        assert self._process is not None
        return self._process.base_url

    async def connection_failed(self, base_url: str, within: float = 1.0) -> bool:
        """A request to `base_url` broke off or was refused: is that engine gone?

        Waits up to `within` seconds for the process to exit. If it did, the supervisor stops
        handing out its URL at once rather than when its own watch notices, so a client that
        retries straight after an error waits for the restart instead of meeting the dead port.
        """
        process = self._process
        if process is None or process.base_url != base_url:
            return True  # already replaced
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), within)
        except TimeoutError:
            return False
        if self._process is process and self.state is EngineState.READY:
            self.last_error = f"engine {describe_exit(process.returncode or 0)}"
            self._set_state(EngineState.RESTARTING)
        return True

    async def stop(self) -> None:
        was_ready = self.state is EngineState.READY
        self._stopping = True
        self._set_state(EngineState.STOPPED)  # from here requests are refused, not queued
        process = self._process
        hooks = process.command.hooks if process is not None else None
        # Only a live, ready engine has anything worth keeping; after a crash nothing is saved.
        if was_ready and hooks is not None and process is not None and process.returncode is None:
            await self._bounded(hooks.before_stop(self.name, process.base_url), "before-stop")
        if self._process is not None:
            await self._process.stop(self.policy.shutdown_grace)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._probe.aclose()

    def kill_now(self) -> None:
        if self._process is not None:
            self._process.kill_now()

    def _unavailable_message(self) -> str:
        if self._stopping:
            return f"model '{self.name}' is shutting down"
        detail = f": {self.last_error}" if self.last_error else ""
        return f"model '{self.name}' is not ready (engine {self.state.value}){detail}"

    def _set_state(self, state: EngineState) -> None:
        self.state = state
        if state is EngineState.READY:
            self._ready.set()
        else:
            self._ready.clear()
        self._changed.set()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            port = free_port(self.host)
            process = EngineProcess(self._command(port), self.host, port, self.log_path)
            self._process = process
            if self.state is not EngineState.RESTARTING:
                self._set_state(EngineState.STARTING)
            started = time.monotonic()
            try:
                await process.start()
                await process.wait_ready(self._probe, self.policy.startup_timeout)
            except EngineStartError as exc:
                await process.stop(self.policy.shutdown_grace)
                if self._stopping:
                    return
                failures += 1
                # Clients get the first line; the engine's last words go to Hearth's log.
                self.last_error = str(exc).splitlines()[0]
                log.error("model %s failed to start (attempt %d): %s", self.name, failures, exc)
                self._set_state(EngineState.FAILED)
                await asyncio.sleep(self._backoff(failures))
                continue

            hooks = process.command.hooks
            if hooks is not None:  # before any request can reach the engine
                await self._bounded(hooks.after_ready(self.name, process.base_url), "after-ready")
            self.last_error = None
            self.ready_since = time.monotonic()
            log.info(
                "model %s ready in %.1fs (engine pid %s)",
                self.name,
                self.ready_since - started,
                process.pid,
            )
            self._set_state(EngineState.READY)
            if self.on_ready is not None:
                self.on_ready(self.ready_since - started)
            reason = await self._watch(process)
            if self._stopping:
                return
            self.restarts += 1
            failures = 0 if time.monotonic() - started > STABLE_AFTER_S else failures + 1
            self.last_error = reason
            log.warning("model %s: %s; restarting", self.name, reason)
            self._set_state(EngineState.RESTARTING)
            await process.stop(self.policy.shutdown_grace)
            if failures:
                await asyncio.sleep(self._backoff(failures))

    def _command(self, port: int) -> EngineCommand:
        command = self.launcher.command(self.host, port)
        if command.hooks is None:
            return command
        return replace(command, argv=[*command.argv, *command.hooks.start_args(self.name)])

    async def _bounded(self, work: Coroutine[object, object, None], what: str) -> None:
        """Run an engine hook for at most `hook_timeout`; its failure is logged, not raised."""
        try:
            await asyncio.wait_for(work, self.policy.hook_timeout)
        except TimeoutError:
            log.warning(
                "model %s: %s hook gave up after %.0fs", self.name, what, self.policy.hook_timeout
            )
        except Exception as exc:  # an engine's optional extra: nothing in it may stop a load
            log.warning(
                "model %s: %s hook failed: %s: %s", self.name, what, type(exc).__name__, exc
            )

    async def _watch(self, process: EngineProcess) -> str:
        """Return when the engine exits or stops answering its health probe."""
        exited = asyncio.ensure_future(process.wait())
        missed = 0
        url = process.base_url + process.command.health_path
        try:
            while True:
                done, _ = await asyncio.wait({exited}, timeout=self.policy.health_interval)
                if done:
                    return f"engine {describe_exit(exited.result())}"
                try:
                    response = await self._probe.get(url)
                    # 503 means busy loading or no free slot: alive, not hung.
                    healthy = response.status_code in (200, 503)
                except httpx.HTTPError:
                    healthy = False
                missed = 0 if healthy else missed + 1
                if missed >= self.policy.health_failures:
                    return f"engine stopped answering health checks ({missed} in a row)"
        finally:
            exited.cancel()

    def _backoff(self, failures: int) -> float:
        delay = min(self.policy.backoff_max, self.policy.backoff_initial * 2.0 ** (failures - 1))
        return delay * random.uniform(0.8, 1.2)
