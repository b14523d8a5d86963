"""The request path's side of access and accounting, called from `dispatch()`: scopes, limits
and budgets before routing; a usage row when the answer has ended or failed."""

from __future__ import annotations

from fastapi import Request

from hearth.api.services import services_of
from hearth.auth.keys import KeyRecord
from hearth.errors import PermissionDenied, QuotaExceeded, RateLimited
from hearth.observability.metrics import HearthMetrics
from hearth.routing.router import Trace


async def admit(request: Request, requested: str, model: str) -> None:
    """Raise PermissionDenied, QuotaExceeded or RateLimited; leave the x-ratelimit-* headers in
    `request.state.ratelimit` for the answer."""
    key: KeyRecord | None = getattr(request.state, "key", None)
    accounting = services_of(request).accounting
    if key is None or accounting is None:
        return
    try:
        request.state.ratelimit = await accounting.access.admit(key, requested, model)
    except (PermissionDenied, QuotaExceeded, RateLimited) as exc:
        reason = (
            "scope"
            if isinstance(exc, PermissionDenied)
            else "budget"
            if isinstance(exc, QuotaExceeded)
            else "rate_limit"
        )
        metrics: HearthMetrics = request.app.state.metrics
        metrics.rejections.labels(reason).inc()
        raise


def record_usage(request: Request, model: str, trace: Trace, status: int) -> None:
    services = services_of(request)
    if services.accounting is None:
        return
    deployment = (
        None if trace.deployment is None else services.catalogue.deployment(trace.deployment)
    )
    price = None if deployment is None else deployment.price
    services.accounting.record(request.state, model, trace, status, price)
