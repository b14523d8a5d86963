"""GET /health (the process is alive) and GET /ready (its models' engines are loaded)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hearth import __version__
from hearth.api.services import services_of
from hearth.engines.supervisor import EngineState

router = APIRouter()


@router.get("/health", summary="Liveness")
async def health() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get("/ready", summary="Readiness: preloaded models loaded (or evicted), none failing")
async def ready(request: Request) -> JSONResponse:
    services = services_of(request)
    models: dict[str, Any] = {}
    for name in services.settings.preload:
        deployment = services.catalogue.local(name)
        loaded = services.scheduler.get(deployment.name)
        supervisor = loaded.supervisor if loaded else None
        models[deployment.name] = {
            "state": supervisor.state.value if supervisor else EngineState.STOPPED.value,
            "restarts": supervisor.restarts if supervisor else 0,
            "last_error": supervisor.last_error if supervisor else None,
        }
    # A preloaded model that was evicted or unloaded is loaded again on demand: still ready.
    serving = (EngineState.READY.value, EngineState.STOPPED.value)
    all_ready = all(m["state"] in serving for m in models.values())
    counter = services.keys.access.counter
    # Not a reason to stop sending traffic here, but worth an alert: see docs/operations.md.
    limits = "shared" if counter.shared else "per-replica"
    if services.settings.redis_url and not counter.shared:
        limits += " (Redis unreachable)"
    return JSONResponse(
        {"status": "ready" if all_ready else "not_ready", "models": models, "rate_limits": limits},
        status_code=200 if all_ready else 503,
    )
