"""LoRA adapters in the catalogue: a `model+adapter` route per adapter over the model's one
deployment, the llama-server flags and per-request `lora` they become, and the settings that
are refused (a bad name or file, an engine that is not llama.cpp)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hearth.deployments.build import build_catalogue
from hearth.deployments.catalogue import Catalogue
from hearth.errors import ConfigError, InvalidRequest
from hearth.models.adapters import AdapterStore
from hearth.models.presets import Preset, PresetStore
from hearth.models.store import ModelStore
from hearth.settings_layers import load_settings
from support.lora_files import TinyLora


def catalogue_for(tmp_path: Path, yaml_text: str) -> Catalogue:
    config = tmp_path / "hearth.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\n{yaml_text}")
    settings = load_settings(config, environ={})
    return build_catalogue(settings, tmp_path / "llama-server", tmp_path / "bundled.gguf")


def test_stored_and_configured_adapters_share_one_engine(
    tmp_path: Path, tiny_lora: TinyLora
) -> None:
    models = tmp_path / "data" / "models"
    ModelStore(models).import_file(tiny_lora.base_gguf, name="tiny")
    AdapterStore(models).add("tiny", "one", tiny_lora.gguf["one"])
    catalogue = catalogue_for(
        tmp_path,
        f"models:\n  tiny:\n    model: tiny\n    adapters: {{two: {tiny_lora.gguf['two']}}}\n",
    )
    tiny = catalogue.local("tiny")
    assert tiny.adapters == ("one", "two")
    for name in ("one", "two"):
        route = catalogue.resolve(f"tiny+{name}")
        assert route.adapter == name and route.local is tiny
    assert catalogue.resolve("tiny").adapter is None
    assert "tiny+one" in catalogue.names() and "gemma-3-270m+one" not in catalogue.names()

    argv = tiny.launcher.command("127.0.0.1", 1).argv
    loras = [argv[i + 1] for i, flag in enumerate(argv) if flag == "--lora"]
    assert loras == [str(models / "adapters" / "tiny" / "one.gguf"), str(tiny_lora.gguf["two"])]
    assert "--lora-init-without-apply" in argv

    def lora(adapter: Any) -> Any:
        body: dict[str, Any] = {"prompt": "x"} if adapter is None else {"adapter": adapter}
        tiny.launcher.prepare_request(body)
        assert "adapter" not in body  # llama-server is given its own field only
        return body["lora"]

    assert lora(None) == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]  # never left out
    assert lora({"name": "two", "scale": 0.5}) == [
        {"id": 0, "scale": 0.0},
        {"id": 1, "scale": 0.5},
    ]
    assert lora("one") == [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.0}]
    with pytest.raises(InvalidRequest, match="its adapters: one, two"):
        lora("three")
    # Without adapters no `lora` is sent (and the model's slot cache stays on).
    plain: dict[str, Any] = {"adapter": None}
    catalogue.local("gemma-3-270m").launcher.prepare_request(plain)
    assert "lora" not in plain


def test_a_preset_carries_its_adapter(tmp_path: Path, tiny_lora: TinyLora) -> None:
    models = tmp_path / "data" / "models"
    ModelStore(models).import_file(tiny_lora.base_gguf, name="tiny")
    AdapterStore(models).add("tiny", "one", tiny_lora.gguf["one"])
    PresetStore(models).create(Preset("tuned", "tiny", adapter="one"), base_known=True)
    catalogue = catalogue_for(tmp_path, "")
    route = catalogue.resolve("tuned")
    assert route.adapter == "one" and route.local is catalogue.local("tiny")
    assert PresetStore(models).get("tuned") is not None
    assert PresetStore(models).get("tuned").adapter == "one"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("adapters: {'bad name': x.gguf}", r"'bad name' cannot name an adapter"),
        ("adapters: {one: 'a.gguf,b.gguf'}", "without commas"),
        ("adapters: {one: /nope.gguf}", r"models\.x\.adapters\.one: '/nope\.gguf' is not a file"),
        ("adapters: {one: BASE}", r"models\.x\.adapters\.one: .* is not a LoRA adapter"),
        ("adapters: {one: OTHER}", r"models\.x\.adapters\.one: .*does not fit its model"),
    ],
)
def test_bad_adapter_settings_are_refused(
    tmp_path: Path, tiny_lora: TinyLora, yaml_text: str, message: str
) -> None:
    text = yaml_text.replace("BASE", str(tiny_lora.base_gguf))
    text = text.replace("OTHER", str(tiny_lora.other_gguf))
    with pytest.raises(ConfigError, match=message):
        catalogue_for(tmp_path, f"models:\n  x:\n    model: {tiny_lora.base_gguf}\n    {text}\n")


def test_an_engine_other_than_llama_cpp_refuses_adapters(
    tmp_path: Path, tiny_lora: TinyLora
) -> None:
    with pytest.raises(ConfigError, match=r"models\.srv\.adapters: only llama\.cpp models"):
        catalogue_for(
            tmp_path,
            "models:\n  srv:\n    model: srv\n    command: 'sleep {port}'\n"
            f"    adapters: {{one: {tiny_lora.gguf['one']}}}\n",
        )
