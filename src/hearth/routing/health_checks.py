"""Background health probes of remote deployments: GET <url>/models every interval. A probe that
fails counts against the deployment's circuit breaker like a failed request; one that answers
closes a breaker whose cooldown is over."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from hearth.deployments.deployment import RemoteDeployment
from hearth.errors import APIError, UpstreamStatusError
from hearth.upstream.client import Timeouts, UpstreamClient

log = logging.getLogger(__name__)


async def probe(upstream: UpstreamClient, deployment: RemoteDeployment) -> str | None:
    """None when the deployment answered, else what went wrong."""
    limits = deployment.timeouts
    timeouts = Timeouts(read=limits.first_token, connect=limits.connect)
    try:
        await upstream.get(
            deployment.url + "/models",
            deployment.describe(),
            deployment.request_headers(),
            timeouts,
        )
    except UpstreamStatusError as exc:
        # 404: the server is up but has no model list (some proxies): that is an answer.
        return None if exc.status_code == 404 else f"HTTP {exc.status_code}"
    except APIError as exc:
        return exc.message
    return None


class HealthChecker:
    def __init__(
        self,
        upstream: UpstreamClient,
        deployments: Callable[[], list[RemoteDeployment]],
        interval: float,
    ) -> None:
        self.upstream = upstream
        self.deployments = deployments  # read each round: a reload may change them
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._failing: set[str] = set()

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="hearth-health-checks")

    async def check_all(self) -> None:
        targets = [d for d in self.deployments() if d.health_check]
        results = await asyncio.gather(*(probe(self.upstream, d) for d in targets))
        for deployment, problem in zip(targets, results, strict=True):
            if problem is None:
                deployment.stats.breaker.probe_succeeded()
                if deployment.name in self._failing:
                    self._failing.discard(deployment.name)
                    log.info("health check of %s passes again", deployment.describe())
            else:
                deployment.stats.breaker.record_failure()
                if deployment.name not in self._failing:
                    self._failing.add(deployment.name)
                    log.warning("health check of %s failed: %s", deployment.describe(), problem)

    async def _run(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:  # a bug here must not stop the checks for good
                log.exception("health checks failed")
            await asyncio.sleep(self.interval)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
