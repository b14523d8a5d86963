"""GET /v1/models and GET /v1/models/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from hearth.api.services import services_of
from hearth.routing.catalogue import LocalDeployment

router = APIRouter()


def _model_card(deployment: LocalDeployment) -> dict[str, Any]:
    return {
        "id": deployment.name,
        "object": "model",
        "created": deployment.created,
        "owned_by": "hearth",
        "capabilities": deployment.capabilities.names(),
        "state": deployment.supervisor.state.value,
    }


@router.get("/v1/models", summary="List the models")
async def list_models(request: Request) -> dict[str, Any]:
    catalogue = services_of(request).catalogue
    return {"object": "list", "data": [_model_card(d) for d in catalogue.deployments()]}


@router.get("/v1/models/{model_id:path}", summary="Describe one model")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    return _model_card(services_of(request).catalogue.resolve(model_id))
