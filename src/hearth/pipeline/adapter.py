"""Choosing a LoRA adapter: a request's `adapter` field, or the adapter of the name it used
(`model+adapter`, or a preset's), checked against what its deployments load and put in the
request as `{"name", "scale"}`, which the llama.cpp launcher turns into llama-server's `lora`."""

from __future__ import annotations

from typing import Any

from hearth.deployments.deployment import LocalDeployment, Route
from hearth.errors import InvalidRequest, ModelNotFound

GENERATING = ("chat", "completion")


def select_adapter(route: Route, fields: dict[str, Any], capability: str) -> dict[str, Any]:
    """`fields` with its adapter chosen and checked (an InvalidRequest naming the problem);
    unchanged when none is asked for."""
    asked = fields.get("adapter")
    if asked is None and route.adapter is None:
        return fields
    name, scale = _parse(asked)
    if name is not None and route.adapter is not None and name != route.adapter:
        raise InvalidRequest(
            f"The model '{route.name}' uses the adapter '{route.adapter}' and the request asks "
            f"for '{name}'; ask for one: the base model's name with 'adapter', or "
            "'model+adapter' alone.",
            param="adapter",
        )
    name = name or route.adapter
    assert name is not None
    if capability not in GENERATING:
        raise InvalidRequest(
            f"LoRA adapters apply to chat and completions, not to {capability} (adapter "
            f"'{name}' of the model '{route.name}').",
            param="adapter",
        )
    for target in route.targets:
        deployment = target.deployment
        if not isinstance(deployment, LocalDeployment) or not deployment.capabilities.adapters:
            what = (
                f"the engine {deployment.launcher.kind}"
                if isinstance(deployment, LocalDeployment)
                else f"the remote deployment '{deployment.name}'"
            )
            raise InvalidRequest(
                f"The model '{route.name}' is served by {what}, which cannot apply a LoRA "
                f"adapter per request (adapter '{name}'); adapters are served by llama.cpp "
                "models.",
                param="adapter",
            )
        if not deployment.adapters:
            raise InvalidRequest(
                f"The model '{deployment.name}' has no adapters, so not '{name}'; attach one "
                f"with `hearth adapter add {deployment.name} {name} FILE`.",
                param="adapter",
            )
        if name not in deployment.adapters:
            raise InvalidRequest(
                f"The model '{deployment.name}' has no adapter '{name}'; its adapters: "
                f"{', '.join(deployment.adapters)}.",
                param="adapter",
            )
    return {**fields, "adapter": {"name": name, "scale": scale}}


def unknown_adapter_route(name: str, visible: list[str]) -> ModelNotFound:
    """The 404 for a name the catalogue does not know: for `model+adapter` whose model is known,
    it names that model's adapters (those the caller may see) instead of every model."""
    base, plus, _ = name.rpartition("+")
    if plus and base:
        prefix = f"{base}+"
        offered = [n for n in visible if n.startswith(prefix)]
        if offered:
            return ModelNotFound(name, offered)
    return ModelNotFound(name, visible)


def _parse(asked: Any) -> tuple[str | None, float]:
    """(name, scale) of a request's `adapter`: a name, or {"name", "scale"} (wire/base.py has
    checked its shape and range)."""
    if asked is None:
        return None, 1.0
    if isinstance(asked, str):
        return asked, 1.0
    if isinstance(asked, dict) and isinstance(asked.get("name"), str):
        return asked["name"], float(asked.get("scale", 1.0))
    raise InvalidRequest(
        'Invalid value for \'adapter\': give an adapter\'s name or {"name": ..., "scale": ...}.',
        param="adapter",
    )
