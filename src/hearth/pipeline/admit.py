"""The admit step: may this caller use this model now? Scopes, budgets and rate limits, decided
from memory by the key service's `Access`; refusals are counted by reason."""

from __future__ import annotations

from dataclasses import dataclass

from hearth.auth.keys import KeyRecord
from hearth.auth.service import KeyService
from hearth.errors import PermissionDenied, QuotaExceeded, RateLimited
from hearth.observability.metrics import HearthMetrics


@dataclass
class Admission:
    keys: KeyService | None  # None: a server without the key service
    metrics: HearthMetrics

    async def admit(self, caller: KeyRecord | None, requested: str, model: str) -> dict[str, str]:
        """The caller's x-ratelimit-* headers; raises PermissionDenied, QuotaExceeded or
        RateLimited. `requested` is the name the client used, `model` the route's own."""
        if caller is None or self.keys is None:
            return {}
        try:
            return await self.keys.access.admit(caller, requested, model)
        except PermissionDenied:
            self.metrics.rejections.labels("scope").inc()
            raise
        except QuotaExceeded:
            self.metrics.rejections.labels("budget").inc()
            raise
        except RateLimited:
            self.metrics.rejections.labels("rate_limit").inc()
            raise
