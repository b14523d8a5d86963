"""GET /admin/models/loaded and POST /admin/models/{name}/unload."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from hearth.api.services import services_of
from hearth.errors import InvalidRequest

router = APIRouter(prefix="/admin/models", tags=["admin"])


@router.get("/loaded", summary="Loaded models: state, requests in flight, idle time, expiry")
async def loaded_models(request: Request) -> dict[str, Any]:
    """Loaded models; under `draining`, the old engines of replaced ones (after an update, a
    rollback or a settings change) still finishing their requests, which stop when those end."""
    now = time.monotonic()
    scheduler = services_of(request).scheduler
    return {
        "data": [m.describe(now) for m in scheduler.loaded()],
        "draining": [{**m.describe(now), "state": "draining"} for m in scheduler.draining()],
    }


@router.post("/{name:path}/unload", summary="Unload a model now")
async def unload_model(name: str, request: Request) -> dict[str, Any]:
    services = services_of(request)
    deployment = services.catalogue.local(name)
    if not await services.scheduler.unload(deployment.name):
        raise InvalidRequest(f"The model '{deployment.name}' is not loaded.", param="name")
    return {"name": deployment.name, "unloaded": True}
