"""Ollama's model endpoints over Hearth's catalogue and model store: GET /api/tags, POST
/api/show, GET /api/ps, DELETE /api/delete, POST /api/copy, GET /api/version, and GET|HEAD /
(the probe clients use to find a server)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from hearth.api.ollama import names
from hearth.api.ollama.facts import ModelFacts, model_facts
from hearth.api.ollama.generate import catalogue_name
from hearth.api.ollama.protocol import CopyRequest, ModelRequest
from hearth.api.scope import caller, visible_names
from hearth.api.services import Services, services_of
from hearth.engines.prompt_cache import PromptCache
from hearth.errors import ConfigError, InvalidRequest, ModelNotFound, ModelStoreError
from hearth.models.store import MAX_NAME_LENGTH, ModelStore, validate_name
from hearth.wire.base import parse_request

router = APIRouter(tags=["ollama"])

# The Ollama release whose /api/* Hearth follows, for clients that check the server's version.
OLLAMA_API_VERSION = "0.6.0"
FOREVER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def root() -> PlainTextResponse:
    return PlainTextResponse("Ollama is running")


@router.get("/api/version", summary="Ollama: the API version Hearth follows")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_API_VERSION}


@router.get("/api/tags", summary="Ollama: every servable model")
async def tags(request: Request) -> dict[str, Any]:
    services = services_of(request)
    visible = visible_names(request, services.catalogue)  # a key lists only its models
    facts = await asyncio.to_thread(_all_facts, services, visible)
    return {"models": [_listing(f) for f in facts]}


@router.post("/api/show", summary="Ollama: a model's details, template and metadata")
async def show(request: Request) -> dict[str, Any]:
    body = parse_request(ModelRequest, await request.body())
    services = services_of(request)
    name = catalogue_name(request, body.model)
    route = services.catalogue.resolve(name)
    facts = await asyncio.to_thread(model_facts, name, route, _store(services))
    return {
        "modelfile": facts.modelfile(with_path=caller(request) is None),
        "parameters": facts.parameters(),
        "template": facts.template(),
        "details": facts.details(),
        "model_info": facts.model_info(),
        "capabilities": facts.capabilities(),
        "modified_at": facts.modified_at,
    }


@router.get("/api/ps", summary="Ollama: the loaded models")
async def ps(request: Request) -> dict[str, Any]:
    services = services_of(request)
    store = _store(services)
    now = time.monotonic()
    models = []
    visible = set(visible_names(request, services.catalogue))
    for loaded in services.scheduler.loaded():
        deployment = loaded.deployment
        if deployment.name not in visible:
            continue  # a key sees only its own models loaded
        route = services.catalogue.resolve(deployment.name)
        facts = await asyncio.to_thread(model_facts, deployment.name, route, store)
        described = loaded.describe(now)
        if loaded.keep_alive < 0:
            expires = FOREVER
        else:
            left = described["expires_in_s"]
            expires = datetime.now(UTC) + timedelta(
                seconds=loaded.keep_alive if left is None else left
            )
        file = facts.file
        on_gpu = file is not None and bool(file.settings.gpu_layers)
        models.append(
            {
                **_listing(facts),
                "size": deployment.memory_bytes,
                "expires_at": expires.isoformat().replace("+00:00", "Z"),
                "size_vram": deployment.memory_bytes if on_gpu else 0,
                "context_length": file.settings.ctx_size if file else None,
            }
        )
    return {"models": models}


@router.delete("/api/delete", summary="Ollama: remove a model from the store")
async def delete(request: Request) -> Response:
    body = parse_request(ModelRequest, await request.body())
    _check_length(body.model, "model")
    services = services_of(request)
    store = _store(services)
    name = _stored_name(services, store, body.model)
    if store.get(name).kind == "bundled":
        _remove(store, name)  # refused, with the store's reason
    users = [key for key, model in services.settings.models.items() if model.model == name]
    if users or name in services.settings.preload:
        where = ", ".join(f"models.{key}" for key in users) or "preload"
        raise InvalidRequest(
            f"The model '{name}' is named in the settings ({where}); change them first.",
            param="model",
        )
    if services.catalogue.get(name) is not None:
        await services.scheduler.unload(name)
    await asyncio.to_thread(_remove, store, name)
    settings = services.settings
    cache = PromptCache(settings.prompt_cache_dir, settings.prompt_cache_max)
    await asyncio.to_thread(cache.remove_model, name)
    await reload_catalogue(services)
    return Response(status_code=200)


def _remove(store: ModelStore, name: str) -> None:
    try:
        store.remove(name)
    except ModelStoreError as exc:
        raise InvalidRequest(str(exc), param="model") from None


@router.post("/api/copy", summary="Ollama: register a model under another name")
async def copy(request: Request) -> Response:
    """The copy shares the source's files (nothing is duplicated on disk); removing either
    keeps the files while the other uses them."""
    body = parse_request(CopyRequest, await request.body())
    _check_length(body.source, "source")
    _check_length(body.destination, "destination")
    services = services_of(request)
    store = _store(services)
    source = store.get(_stored_name(services, store, body.source))
    destination = names.canonical(body.destination)
    try:
        validate_name(destination)
    except ModelStoreError as exc:
        message = f"Invalid value for 'destination': {exc}."
        raise InvalidRequest(message, param="destination") from None
    if destination in store or destination in services.catalogue.names():
        raise InvalidRequest(
            f"A model named '{destination}' already exists; delete it first or pick another name.",
            param="destination",
        )
    copied = dataclasses.replace(
        source,
        name=destination,
        kind="imported",
        source=f"copy of {source.name} ({source.source})",
        added=datetime.now(UTC),
    )
    try:
        await asyncio.to_thread(store.register, copied)
    except ModelStoreError as exc:
        raise InvalidRequest(str(exc), param="destination") from None
    await reload_catalogue(services)
    return Response(status_code=200)


def _check_length(name: str, field: str) -> None:
    """400 for a name no model can have: past the store's limit even without Ollama's
    `hf.co/` prefix and `:latest` tag."""
    if min(map(len, names.candidates(name))) > MAX_NAME_LENGTH:
        raise InvalidRequest(
            f"Invalid value for '{field}': a model name is at most {MAX_NAME_LENGTH} characters; "
            f"this one has {len(name)}.",
            param=field,
        )


def _store(services: Services) -> ModelStore:
    return ModelStore(services.settings.models_dir)


def _stored_name(services: Services, store: ModelStore, name: str) -> str:
    """The store's name for an Ollama name; 400 for a name only the settings define."""
    try:
        return names.resolve(name, store.__contains__, store.names())
    except ModelNotFound:
        known = services.catalogue.names()
        if any(candidate in known for candidate in names.candidates(name)):
            raise InvalidRequest(
                f"The model '{name}' is defined in the settings, not the model store; change it "
                "there.",
                param="model",
            ) from None
        raise


async def reload_catalogue(services: Services) -> None:
    """Rebuild the catalogue from the store, so the change is served at once."""
    try:
        await services.reload(services.settings)
    except ConfigError as exc:
        raise InvalidRequest(f"The change was made but cannot be served: {exc}") from None


def _all_facts(services: Services, names: list[str]) -> list[ModelFacts]:
    store = _store(services)
    catalogue = services.catalogue
    return [model_facts(name, catalogue.resolve(name), store) for name in names]


def _listing(facts: ModelFacts) -> dict[str, Any]:
    listed = names.listed(facts.name)
    return {
        "name": listed,
        "model": listed,
        "modified_at": facts.modified_at,
        "size": facts.size,
        "digest": facts.digest,
        "details": facts.details(),
    }
