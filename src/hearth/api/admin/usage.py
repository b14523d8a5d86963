"""GET /admin/usage: the same totals as `hearth usage`, as JSON; GET /admin/savings: the same
report as `hearth usage --savings`."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request

from hearth.api.services import services_of
from hearth.errors import InvalidRequest
from hearth.usage.report import usage_report
from hearth.usage.savings import savings_report

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/usage", summary="Requests, tokens and cost per key, model, team or deployment")
async def usage(
    request: Request,
    by: Literal["key", "model", "team", "deployment"] = "model",
    since: str = "7d",
) -> dict[str, Any]:
    services = services_of(request)
    await services.usage.sync()  # include what is still buffered
    try:
        rows = await usage_report(services.database, since, by)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="since") from None
    return {"by": by, "since": since, "data": rows}


@router.get(
    "/savings",
    summary="Local models' tokens: their cost here, on a cloud model, the saving, break-even",
)
async def savings(
    request: Request,
    by: Literal["key", "model", "team", "deployment"] = "model",
    since: str = "30d",
    reference: str | None = None,
) -> dict[str, Any]:
    services = services_of(request)
    await services.usage.sync()  # include what is still buffered
    try:
        return await savings_report(services.database, services.settings, since, by, reference)
    except ValueError as exc:
        param = "reference" if "price table" in str(exc) else "since"
        raise InvalidRequest(str(exc), param=param) from None
