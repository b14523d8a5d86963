"""LoRA adapters in the store: attaching a GGUF (checked against its model), converting a PEFT
folder with llama.cpp's converter, listing and removing; nothing half-registered on failure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hearth.config import Settings
from hearth.errors import ModelNotFound, ModelStoreError, SetupError
from hearth.models.adapters import AdapterStore, check_adapter_file, convert_adapter
from hearth.models.gguf_info import read_gguf_header
from hearth.models.store import ModelStore
from support.lora_files import TinyLora


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def store(settings: Settings, tiny_lora: TinyLora) -> AdapterStore:
    ModelStore(settings.models_dir).import_file(tiny_lora.base_gguf, name="tiny")
    return AdapterStore(settings.models_dir)


def _leftovers(settings: Settings) -> list[str]:
    folder = settings.models_dir / "adapters"
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_a_gguf_is_attached_listed_and_removed(store: AdapterStore, tiny_lora: TinyLora) -> None:
    added = store.add("tiny", "one", tiny_lora.gguf["one"])
    assert added.path.read_bytes() == tiny_lora.gguf["one"].read_bytes()  # a copy, kept
    assert added.path.parent.parent == store.folder
    store.add("tiny", "two", tiny_lora.gguf["two"])
    assert [(a.model, a.name) for a in store.list()] == [("tiny", "one"), ("tiny", "two")]
    assert [a.name for a in store.list("tiny")] == ["one", "two"]
    assert store.get("tiny", "one") == added

    with pytest.raises(ModelStoreError, match="already has an adapter named 'one'"):
        store.add("tiny", "one", tiny_lora.gguf["two"])
    replaced = store.add("tiny", "one", tiny_lora.gguf["two"], replace=True)
    assert replaced.path.read_bytes() == tiny_lora.gguf["two"].read_bytes()

    removed = store.remove("tiny", "one")
    assert not removed.path.exists() and [a.name for a in store.list("tiny")] == ["two"]
    with pytest.raises(ModelStoreError, match="no adapter named 'one'; its adapters: two"):
        store.remove("tiny", "one")
    assert [a.name for a in store.remove_all("tiny")] == ["two"]
    assert store.list() == [] and not (store.folder / "tiny").exists()


@pytest.mark.parametrize(
    ("name", "problem"),
    [("../up", "cannot name an adapter"), ("a b", "cannot name an adapter"),
     ("", "cannot name an adapter"), ("x" * 65, "cannot name an adapter"),
     ("-dash", "cannot name an adapter")],
)  # fmt: skip
def test_bad_names_are_refused(
    store: AdapterStore, tiny_lora: TinyLora, settings: Settings, name: str, problem: str
) -> None:
    with pytest.raises(ModelStoreError, match=problem):
        store.add("tiny", name, tiny_lora.gguf["one"])
    assert _leftovers(settings) == []


def test_what_does_not_fit_the_model_is_refused(
    store: AdapterStore, tiny_lora: TinyLora, settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(ModelStoreError, match="is not a LoRA adapter"):
        store.add("tiny", "model", tiny_lora.base_gguf)  # a model, not an adapter
    with pytest.raises(ModelStoreError, match="does not fit its model"):
        store.add("tiny", "other", tiny_lora.other_gguf)  # trained for a narrower model
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ModelStoreError, match="not a GGUF file"):
        store.add("tiny", "text", text)
    with pytest.raises(ModelStoreError, match="does not exist"):
        store.add("tiny", "gone", tmp_path / "gone.gguf")
    with pytest.raises(ModelNotFound, match="'nope' does not exist"):
        store.add("nope", "one", tiny_lora.gguf["one"])
    assert _leftovers(settings) == []


def test_the_shape_check_is_the_engines(tiny_lora: TinyLora) -> None:
    """The adapter's own tensors fit its own base, and a LoRA for another base does not."""
    check_adapter_file(tiny_lora.gguf["one"], tiny_lora.base_gguf)
    check_adapter_file(tiny_lora.other_gguf, tiny_lora.other_base_gguf)
    with pytest.raises(ModelStoreError, match="does not fit"):
        check_adapter_file(tiny_lora.gguf["one"], tiny_lora.other_base_gguf)


def test_a_peft_folder_is_converted_and_attached(
    store: AdapterStore, tiny_lora: TinyLora, settings: Settings
) -> None:
    lines: list[str] = []
    added = convert_adapter(
        tiny_lora.peft["one"], tiny_lora.base, settings, lines.append,
        script=tiny_lora.script, name="one", model="tiny",
    )  # fmt: skip
    assert (added.model, added.name, added.source) == ("tiny", "one", str(tiny_lora.peft["one"]))
    meta = read_gguf_header(added.path).metadata
    assert (meta["general.type"], meta["adapter.type"]) == ("adapter", "lora")
    assert any("successfully exported" in line for line in lines)
    assert _leftovers(settings) == ["one.gguf", "one.json", "tiny"]


def test_the_base_may_come_from_the_adapter_config(
    store: AdapterStore, tiny_lora: TinyLora, settings: Settings
) -> None:
    """No base given: the adapter's base_model_name_or_path (the checkpoint folder here) is
    read; the model to attach to is named."""
    added = convert_adapter(
        tiny_lora.peft["two"], None, settings, script=tiny_lora.script, model="tiny"
    )
    assert (added.model, added.name) == ("tiny", "lora-two")  # named after the folder


def test_a_failed_conversion_registers_nothing(
    store: AdapterStore, tiny_lora: TinyLora, settings: Settings, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_lora.peft["one"], broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelStoreError, match=r"convert_lora_to_gguf\.py failed"):
        convert_adapter(
            broken, tiny_lora.base, settings, script=tiny_lora.script, name="x", model="tiny"
        )
    assert store.list() == [] and _leftovers(settings) == []


def test_what_convert_needs_is_said(
    store: AdapterStore, tiny_lora: TinyLora, settings: Settings, tmp_path: Path
) -> None:
    script = tiny_lora.script
    with pytest.raises(ModelStoreError, match=r"no adapter_config\.json"):
        convert_adapter(tiny_lora.base, "tiny", settings, script=script)
    # 'tiny' was imported from a GGUF: no checkpoint to read, and the adapter names a hub id.
    hub_named = tmp_path / "hub-named"
    shutil.copytree(tiny_lora.peft["one"], hub_named)
    config = json.loads((hub_named / "adapter_config.json").read_text())
    (hub_named / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "someone/llama"})
    )
    with pytest.raises(ModelStoreError, match="--base FOLDER"):
        convert_adapter(hub_named, "tiny", settings, script=script)
    with pytest.raises(ModelStoreError, match="neither a stored model"):
        convert_adapter(hub_named, None, settings, script=script)
    with pytest.raises(ModelStoreError, match="name the stored model"):
        convert_adapter(hub_named, tiny_lora.base, settings, script=script)
    with pytest.raises(SetupError, match="hearth setup"):
        convert_adapter(hub_named, tiny_lora.base, settings, script=tmp_path / "x.py", model="tiny")
    assert _leftovers(settings) == []
