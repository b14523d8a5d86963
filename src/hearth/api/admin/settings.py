"""POST /admin/reload: read the settings again and apply model changes while serving."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from hearth.api.services import services_of
from hearth.errors import ConfigError, InvalidRequest

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/reload", summary="Reload the settings (models, keep_alive, defaults)")
async def reload_settings(request: Request) -> dict[str, Any]:
    loader = request.app.state.reload_settings
    if loader is None:
        raise InvalidRequest("This server was started without a way to reload its settings.")
    try:
        changes = await services_of(request).reload(loader())
    except ConfigError as exc:
        raise InvalidRequest(f"The new settings were not applied: {exc}") from None
    return {"reloaded": True, "models": changes}
