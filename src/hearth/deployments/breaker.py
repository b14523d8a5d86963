"""A circuit breaker per deployment: closed → open after N failures in a window → half-open (one
trial request) after a cooldown → closed on success, open again on failure.

Requests that fail (connection errors, timeouts, 429 and 5xx) and background health probes both
feed it; every routing strategy skips a deployment whose breaker does not allow a request.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)


class BreakerState(enum.Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


# The value of the hearth_deployment_breaker_state gauge.
BREAKER_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failures: int = 5,
        window: float = 60.0,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.threshold = failures
        self.window = window
        self.cooldown = cooldown
        self._clock = clock
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._trial_started: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.cooldown:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a trial request through (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def allows(self) -> bool:
        """Whether a request may go to the deployment now. Half-open, one trial request is let
        through; if its outcome is never reported, another goes a cooldown later."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self._clock()
        if self._trial_started is not None and now - self._trial_started < self.cooldown:
            return False
        self._trial_started = now
        return True

    def record_success(self) -> None:
        if self._opened_at is not None:
            log.info("deployment %s is answering again: circuit closed", self.name)
        self._opened_at = None
        self._trial_started = None
        self._failures.clear()

    def record_failure(self) -> None:
        now = self._clock()
        if self._opened_at is not None:
            if self.state is BreakerState.HALF_OPEN:  # the trial failed: wait another cooldown
                self._opened_at = now
                self._trial_started = None
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window:
            self._failures.popleft()
        if len(self._failures) >= self.threshold:
            self._opened_at = now
            self._trial_started = None
            self._failures.clear()
            log.warning(
                "deployment %s failed %d times within %.0f s: circuit open for %.0f s",
                self.name,
                self.threshold,
                self.window,
                self.cooldown,
            )

    def probe_succeeded(self) -> None:
        """A background health probe got an answer. It closes a breaker whose cooldown is over
        (it stands in for the trial request) but not one still cooling down, so a deployment
        that answers probes yet fails requests does not flap."""
        if self.state is not BreakerState.OPEN:
            self.record_success()
