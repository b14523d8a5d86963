"""GET /v1/models and GET /v1/models/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from hearth.api.services import Services, services_of
from hearth.routing.catalogue import LocalDeployment

router = APIRouter()


def _model_card(name: str, deployment: LocalDeployment, services: Services) -> dict[str, Any]:
    loaded = services.scheduler.get(deployment.name)
    return {
        "id": name,
        "object": "model",
        "created": deployment.created,
        "owned_by": "hearth",
        "capabilities": deployment.capabilities.names(),
        "alias_of": None if name == deployment.name else deployment.name,
        "state": loaded.supervisor.state.value if loaded else "not_loaded",
    }


@router.get("/v1/models", summary="List every servable model and alias, loaded or not")
async def list_models(request: Request) -> dict[str, Any]:
    services = services_of(request)
    cards = [
        _model_card(name, services.catalogue.resolve(name), services)
        for name in services.catalogue.names()
    ]
    return {"object": "list", "data": cards}


@router.get("/v1/models/{model_id:path}", summary="Describe one model")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    services = services_of(request)
    return _model_card(model_id, services.catalogue.resolve(model_id), services)
