"""GET /admin/deployments: every deployment with the figures routing decides by — breaker state,
requests in flight, time-to-first-token average — and, for local models, their engine's state and
memory. Never a deployment's API key or headers."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Request

from hearth.api.services import Services, services_of
from hearth.deployments.deployment import Deployment, LocalDeployment

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/deployments", summary="Deployments: health, breaker state, in flight, latency")
async def list_deployments(request: Request) -> dict[str, Any]:
    services = services_of(request)
    now = time.monotonic()
    return {"data": [describe(d, services, now) for d in services.catalogue.all_deployments()]}


def describe(deployment: Deployment, services: Services, now: float) -> dict[str, Any]:
    stats = deployment.stats
    breaker = stats.breaker
    card: dict[str, Any] = {
        "name": deployment.name,
        "kind": deployment.kind,
        "aliases": list(deployment.aliases),
        "capabilities": deployment.capabilities.names(),
        "breaker": breaker.state.value,
        "breaker_retry_after_s": round(breaker.retry_after(), 1),
        "in_flight": stats.in_flight,
        "capacity": deployment.capacity,
        "ttft_avg_ms": None if stats.ttft is None else round(stats.ttft * 1000, 1),
        "price": deployment.price.model_dump(),
    }
    if isinstance(deployment, LocalDeployment):
        loaded = services.scheduler.get(deployment.name)
        card["memory_bytes"] = deployment.memory_bytes
        card["keep_alive_s"] = deployment.keep_alive
        card["state"] = loaded.supervisor.state.value if loaded else "not_loaded"
        card["engine"] = loaded.describe(now) if loaded else None
    else:
        card["url"] = without_credentials(deployment.url)
        card["model"] = deployment.model
        card["health_check"] = deployment.health_check
        card["state"] = "remote"
    return card


def without_credentials(url: str) -> str:
    """The URL without user info or query string, where a credential could hide."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
