"""Recent latency for the dashboard: the histograms count from the start, so after a day of
uptime their percentiles say little about the last few minutes. Readings of them, taken as
/admin/stats is read (at most one per `gap`, none older than `window` kept), give the difference
over the last few minutes instead. The window is left out when it would be the same thing as
"since start" (a young server) or too short to mean anything (nobody polled for a while)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Buckets = dict[str, dict[float, float]]  # histogram key → cumulative count per upper bound
Sums = dict[str, float]

WINDOW_S = 300.0
GAP_S = 5.0
SHORTEST_S = 60.0  # a shorter window is noise, not a reading


@dataclass(frozen=True)
class Reading:
    at: float
    buckets: Buckets
    sums: Sums


@dataclass(frozen=True)
class Difference:
    seconds: float  # how far back the window reaches
    buckets: Buckets
    sums: Sums


class LatencyWindow:
    def __init__(
        self,
        window: float = WINDOW_S,
        gap: float = GAP_S,
        shortest: float = SHORTEST_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window, self.gap, self.shortest = window, gap, shortest
        self._clock = clock
        self._start = Reading(clock(), {}, {})  # nothing observed yet
        self._readings: list[Reading] = [self._start]

    def since(self, buckets: Buckets, sums: Sums) -> Difference | None:
        """Record this reading; return what was observed since the oldest one in the window,
        or None when "since start" says the same or the window is too short."""
        now = self._clock()
        self._readings = [r for r in self._readings if now - r.at <= self.window]
        base = self._readings[0] if self._readings else None
        if not self._readings or now - self._readings[-1].at >= self.gap:
            copied = {key: dict(counts) for key, counts in buckets.items()}
            self._readings.append(Reading(now, copied, dict(sums)))
        if base is None or base is self._start or now - base.at < self.shortest:
            return None
        return Difference(
            seconds=now - base.at,
            buckets={
                key: {
                    bound: count - base.buckets.get(key, {}).get(bound, 0.0)
                    for bound, count in counts.items()
                }
                for key, counts in buckets.items()
            },
            sums={key: total - base.sums.get(key, 0.0) for key, total in sums.items()},
        )
