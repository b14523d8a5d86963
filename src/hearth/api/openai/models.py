"""GET /v1/models and GET /v1/models/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from hearth.api.scope import may_see, resolve_visible
from hearth.api.services import Services, services_of
from hearth.deployments.deployment import Route

router = APIRouter()


def _model_card(name: str, route: Route, services: Services) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": name,
        "object": "model",
        "created": min(target.deployment.created for target in route.targets),
        "owned_by": "hearth",
        "capabilities": route.capabilities(),
        "alias_of": None if name == route.name else route.name,
    }
    if route.adapter is not None:  # `model+adapter`: the model's engine, with a LoRA adapter
        card["adapter"] = route.adapter
    local = route.local
    if local is not None:
        loaded = services.scheduler.get(local.name)
        card["state"] = loaded.supervisor.state.value if loaded else "not_loaded"
    else:
        card["state"] = "remote"
        card["strategy"] = route.strategy
        card["deployments"] = [target.deployment.name for target in route.targets]
    return card


@router.get("/v1/models", summary="List every servable model and alias, loaded or not")
async def list_models(request: Request) -> dict[str, Any]:
    services = services_of(request)
    cards = [_model_card(name, route, services) for name, route in _listed(request, services)]
    return {"object": "list", "data": cards}


def _listed(request: Request, services: Services) -> list[tuple[str, Route]]:
    routes = ((name, services.catalogue.resolve(name)) for name in services.catalogue.names())
    return [(name, route) for name, route in routes if may_see(request, name, route)]


@router.get("/v1/models/{model_id:path}", summary="Describe one model")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    services = services_of(request)
    route = resolve_visible(request, services.catalogue, model_id)
    return _model_card(model_id, route, services)
