"""Choosing a request's LoRA adapter from its `adapter` field and the name it used."""

from __future__ import annotations

from typing import Any

import pytest

from hearth.deployments.deployment import LocalDeployment, Route, Target
from hearth.engines.base import Capabilities
from hearth.errors import InvalidRequest
from hearth.pipeline.adapter import select_adapter, unknown_adapter_route
from support.fake_launcher import FakeLauncher


class AdapterLauncher(FakeLauncher):
    """An engine that applies adapters per request, as llama.cpp's does."""

    capabilities = Capabilities(chat=True, completion=True, adapters=True)


def _route(
    adapter: str | None = None,
    adapters: tuple[str, ...] = ("one", "two"),
    launcher: type[FakeLauncher] = AdapterLauncher,
) -> Route:
    deployment = LocalDeployment("tiny", launcher(), 0, adapters=adapters)  # type: ignore[arg-type]
    name = "tiny" if adapter is None else f"tiny+{adapter}"
    return Route(name, [Target(deployment)], adapter=adapter)


@pytest.mark.parametrize(
    ("route", "asked", "chosen"),
    [
        (_route(), "two", {"name": "two", "scale": 1.0}),
        (_route(), {"name": "one", "scale": 0.25}, {"name": "one", "scale": 0.25}),
        (_route(), {"name": "one"}, {"name": "one", "scale": 1.0}),
        (_route("one"), None, {"name": "one", "scale": 1.0}),
        (_route("one"), {"name": "one", "scale": 2}, {"name": "one", "scale": 2.0}),
    ],
)
def test_the_adapter_is_chosen(route: Route, asked: Any, chosen: dict[str, Any]) -> None:
    fields = {"prompt": "x"} if asked is None else {"prompt": "x", "adapter": asked}
    assert select_adapter(route, fields, "completion") == {"prompt": "x", "adapter": chosen}


def test_no_adapter_leaves_the_request_alone() -> None:
    fields = {"prompt": "x"}
    assert select_adapter(_route(), fields, "completion") is fields


@pytest.mark.parametrize(
    ("route", "asked", "capability", "problem"),
    [
        (_route(), "three", "chat", "no adapter 'three'; its adapters: one, two"),
        (_route("one"), "two", "chat", "uses the adapter 'one' and the request asks for 'two'"),
        (_route("one"), None, "embeddings", "not to embeddings"),
        (_route(launcher=FakeLauncher), "one", "chat", "the engine fake, which cannot apply"),
        (_route(adapters=()), "one", "chat", "'tiny' has no adapters, so not 'one'"),
    ],
)  # fmt: skip
def test_what_cannot_be_served_is_a_400(
    route: Route, asked: Any, capability: str, problem: str
) -> None:
    fields = {} if asked is None else {"adapter": asked}
    with pytest.raises(InvalidRequest, match=problem) as raised:
        select_adapter(route, fields, capability)
    assert raised.value.status_code == 400 and raised.value.param == "adapter"


def test_an_unknown_adapter_name_lists_the_models_adapters() -> None:
    visible = ["gemma", "tiny", "tiny+one", "tiny+two"]
    assert (
        "Available models: tiny+one, tiny+two." in unknown_adapter_route("tiny+x", visible).message
    )
    assert "Available models: gemma, tiny" in unknown_adapter_route("gemma+x", visible).message
    assert "Available models: gemma, tiny" in unknown_adapter_route("nope", visible).message
