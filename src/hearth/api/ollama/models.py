"""Ollama's model endpoints over Hearth's catalogue and model store: GET /api/tags, POST
/api/show, GET /api/ps, DELETE /api/delete, POST /api/copy, POST /api/create (presets), GET
/api/version, and GET|HEAD / (the probe clients use to find a server)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from hearth.api.ollama import names
from hearth.api.ollama.facts import ModelFacts, model_facts
from hearth.api.ollama.generate import catalogue_name
from hearth.api.ollama.protocol import CopyRequest, CreateRequest, ModelRequest
from hearth.api.scope import caller, visible_names
from hearth.api.services import Services, services_of
from hearth.engines.prompt_cache import PromptCache
from hearth.errors import ConfigError, InvalidRequest, ModelNotFound, ModelStoreError
from hearth.models.presets import Preset, PresetStore, check_parameters
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
    if route.preset is not None:
        return _show_preset(facts, route.preset)
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
    presets = PresetStore(store.models_dir)
    preset = next((n for n in names.candidates(body.model) if n in presets), None)
    if preset is not None:
        await asyncio.to_thread(_remove_preset, presets, preset)
        await reload_catalogue(services)
        return Response(status_code=200)
    name = _stored_name(services, store, body.model)
    if users := presets.users_of(name):
        raise InvalidRequest(
            f"The model '{name}' is the base of the preset(s) {', '.join(users)}; delete them "
            "first.",
            param="model",
        )
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


def _remove_preset(presets: PresetStore, name: str) -> None:
    try:
        presets.remove(name)
    except ModelStoreError as exc:
        raise InvalidRequest(str(exc), param="model") from None


@router.post("/api/create", summary="Ollama: create a preset (a model with a system prompt)")
async def create(request: Request) -> Response:
    """A preset over the model `from`: its system prompt, default parameters and template,
    served on the base's engine. A preset of the same name is replaced, as Ollama does."""
    body = parse_request(CreateRequest, await request.body())
    _check_length(body.model, "model")
    _refuse_unsupported(body)
    if body.base is None:
        raise InvalidRequest(
            "Missing 'from': Hearth's /api/create makes a preset over a model it serves; name "
            "that model in 'from'.",
            param="from",
        )
    _check_length(body.base, "from")
    services = services_of(request)
    name = names.canonical(body.model)
    try:
        validate_name(name)
        check_parameters(body.parameters or {})
    except ModelStoreError as exc:
        param = "parameters" if body.parameters and "parameters" in str(exc) else "model"
        raise InvalidRequest(f"Invalid value for '{param}': {exc}.", param=param) from None
    base = catalogue_name(request, body.base)  # 404 naming the models there are
    presets = PresetStore(services.settings.models_dir)
    if name in services.catalogue.names() and name not in presets:
        raise InvalidRequest(
            f"Invalid value for 'model': a model named '{name}' already exists and is not a "
            "preset; pick another name.",
            param="model",
        )
    preset = Preset(name, base, body.system, dict(body.parameters or {}), body.template)
    try:
        await asyncio.to_thread(presets.create, preset, base_known=True, replace=True)
    except ModelStoreError as exc:
        param = "from" if base in str(exc) else "model"
        raise InvalidRequest(f"Invalid value for '{param}': {exc}.", param=param) from None
    await reload_catalogue(services)
    if not body.stream:
        return JSONResponse({"status": "success"})
    lines = [{"status": f"creating preset {name} from {base}"}, {"status": "success"}]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    return Response(text, media_type="application/x-ndjson")


def _refuse_unsupported(body: CreateRequest) -> None:
    if body.modelfile is not None:
        raise InvalidRequest(
            "'modelfile' is the old /api/create; send 'from', 'system', 'parameters' and "
            "'template' instead.",
            param="modelfile",
        )
    if body.adapters:
        raise InvalidRequest(
            "'adapters' (uploaded blobs) is not supported: attach a LoRA adapter to the model "
            "with `hearth adapter add MODEL NAME FILE` and use it as the model 'MODEL+NAME', or "
            "make a preset of it with `hearth create NAME --from MODEL --adapter NAME`.",
            param="adapters",
        )
    for field in ("files", "quantize", "messages"):
        if getattr(body, field):
            raise InvalidRequest(
                f"'{field}' is not supported: Hearth's /api/create makes presets over a model "
                "it serves (name it in 'from'); import GGUF files with `hearth import`.",
                param=field,
            )


def _show_preset(facts: ModelFacts, preset: Preset) -> dict[str, Any]:
    """/api/show of a preset: its own system prompt, parameters and template, over the details
    of its base."""
    values = dict(preset.parameters)
    if facts.file is not None:
        values.setdefault("num_ctx", facts.file.settings.ctx_size)
    parameters = "\n".join(f"{key:<30} {json.dumps(value)}" for key, value in values.items())
    lines = ["# Modelfile generated by Hearth (a preset)", f"FROM {preset.base}"]
    if preset.system:
        lines.append(f'SYSTEM """{preset.system}"""')
    for key, value in preset.parameters.items():
        for one in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {key} {json.dumps(one)}")
    if preset.template:
        lines.append(f'TEMPLATE """{preset.template}"""')
    return {
        "modelfile": "\n".join(lines) + "\n",
        "parameters": parameters,
        "template": preset.template or facts.template(),
        "system": preset.system or "",
        "details": {**facts.details(), "parent_model": preset.base},
        "model_info": facts.model_info(),
        "capabilities": facts.capabilities(),
        "modified_at": (preset.added or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
    }


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
