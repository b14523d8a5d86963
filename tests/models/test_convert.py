"""`convert`: a Hugging Face checkpoint folder (and a Hub repository of one, from the fake hub)
through llama.cpp's real convert_hf_to_gguf.py into a stored GGUF, with progress, the script's
own reasons when it fails, and nothing left behind by a failure or an interrupt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gguf import LlamaFileType

from hearth.errors import ModelStoreError, PullError, SetupError
from hearth.models.convert import (
    INSTALL_HINT,
    Checkpoint,
    check_packages,
    checkpoint_folder,
    convert_checkpoint,
    download_checkpoint,
    local_checkpoint,
    remove_download,
    resolve_source,
)
from hearth.models.gguf_info import read_gguf_header, read_gguf_info
from hearth.models.hub_ref import HubRef
from hearth.models.store import ModelStore
from support.fake_hub import COMMIT, FakeHub
from support.gguf_files import write_gguf

TENSORS = 21


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def leftovers(store: ModelStore) -> list[Path]:
    folder = store.models_dir / "converted"
    return sorted(folder.rglob("*")) if folder.exists() else []


def copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_converts_a_checkpoint_folder(
    store: ModelStore, tiny_checkpoint: Path, convert_script: Path
) -> None:
    stages: list[tuple[str, int | None, int | None]] = []
    model = convert_checkpoint(
        local_checkpoint(tiny_checkpoint),
        store,
        convert_script,
        progress=lambda *stage: stages.append(stage),
    )
    assert model.name == "tiny-llama:F16"
    assert store.get("tiny-llama:F16") == model
    assert model.kind == "converted"
    assert model.source == str(tiny_checkpoint)
    assert model.path == store.models_dir / "converted" / "tiny-llama%3AF16" / "tiny-llama-F16.gguf"
    info = read_gguf_info(model.path)
    assert (info.architecture, info.quantization, info.block_count) == ("llama", "F16", 2)
    assert (info.vocab_size, info.embedding_length, info.context_length) == (320, 256, 2048)
    assert len(read_gguf_header(model.path).tensors) == TENSORS
    # Progress: every tensor counted, then the file written to 100%.
    counted = [done for stage, done, _ in stages if stage.startswith("converting tensors")]
    assert counted == list(range(1, TENSORS + 1))
    assert ("writing the GGUF file", 100, 100) in stages
    assert any("LlamaForCausalLM" in stage for stage, *_ in stages)
    assert [p.name for p in leftovers(store)] == [model.path.parent.name, model.path.name]


@pytest.mark.parametrize(
    ("outtype", "tag", "file_type"),
    [("q8_0", "Q8_0", LlamaFileType.MOSTLY_Q8_0), ("auto", "F16", LlamaFileType.MOSTLY_F16)],
)
def test_the_output_type(
    store: ModelStore,
    tiny_checkpoint: Path,
    convert_script: Path,
    outtype: str,
    tag: str,
    file_type: LlamaFileType,
) -> None:
    """q8_0 straight from the script; auto keeps a 16-bit type (F16 for these f32 weights), and
    the name's tag says which."""
    model = convert_checkpoint(
        local_checkpoint(tiny_checkpoint), store, convert_script, outtype=outtype
    )
    assert model.name == f"tiny-llama:{tag}"
    assert read_gguf_header(model.path).metadata["general.file_type"] == file_type


def test_an_interrupt_leaves_nothing(
    store: ModelStore, tiny_checkpoint: Path, convert_script: Path
) -> None:
    """Ctrl-C (KeyboardInterrupt) while the script runs: it is stopped, its partial output
    deleted, nothing registered."""

    def interrupt(stage: str, done: int | None, total: int | None) -> None:
        if stage.startswith("converting tensors") and done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(
            local_checkpoint(tiny_checkpoint), store, convert_script, progress=interrupt
        )
    assert "tiny-llama:F16" not in store
    assert leftovers(store) == []
    assert not _running(str(store.models_dir))  # the script, writing under it, has ended


def test_an_architecture_the_script_does_not_know(
    store: ModelStore, tiny_checkpoint: Path, convert_script: Path, tmp_path: Path
) -> None:
    folder = copy_checkpoint(tiny_checkpoint, tmp_path / "odd")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["NoSuchModelForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelStoreError) as failed:
        convert_checkpoint(local_checkpoint(folder), store, convert_script)
    message = str(failed.value)
    assert "Model NoSuchModelForCausalLM is not supported" in message  # the script's own words
    assert "cannot convert this architecture" in message
    assert "odd:F16" not in store
    assert leftovers(store) == []


def test_a_script_failure_is_passed_through(
    store: ModelStore, tiny_checkpoint: Path, convert_script: Path, tmp_path: Path
) -> None:
    folder = copy_checkpoint(tiny_checkpoint, tmp_path / "broken")
    (folder / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ModelStoreError, match=r"convert_hf_to_gguf.py could not convert .*broken"):
        convert_checkpoint(local_checkpoint(folder), store, convert_script)
    assert leftovers(store) == []


def test_not_a_checkpoint(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelStoreError, match="not a Hugging Face checkpoint folder"):
        local_checkpoint(empty)
    write_gguf(empty / "model-Q4_K_M.gguf")
    with pytest.raises(ModelStoreError, match=r"model-Q4_K_M.gguf, a GGUF already.*hearth import"):
        local_checkpoint(empty)
    (empty / "config.json").write_text("{}")
    with pytest.raises(ModelStoreError, match=r"no model weights \(\*.safetensors"):
        local_checkpoint(empty)
    (empty / "config.json").write_text("{not json")
    with pytest.raises(ModelStoreError, match=r"config.json is not readable JSON"):
        local_checkpoint(empty)


def test_what_a_source_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme" / "tiny").mkdir(parents=True)
    assert resolve_source("acme/tiny") == tmp_path / "acme" / "tiny"  # a folder there wins
    assert resolve_source("acme/other") == HubRef("acme/other")
    assert resolve_source("hf.co/acme/other") == HubRef("acme/other")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelStoreError, match=r"is a file.*GGUF already"):
        resolve_source("model.gguf")
    for bad in ("./missing", "acme/other:Q4_K_M", "a/b/c", "just-a-word"):
        with pytest.raises(ModelStoreError, match=r"no folder .* not a Hugging Face repository"):
            resolve_source(bad)


def test_refusals_before_the_script_runs(
    store: ModelStore, tiny_checkpoint: Path, convert_script: Path, tmp_path: Path
) -> None:
    checkpoint = local_checkpoint(tiny_checkpoint)
    with pytest.raises(ModelStoreError, match="--outtype 'tq1_0' is not one of"):
        convert_checkpoint(checkpoint, store, convert_script, outtype="tq1_0")
    with pytest.raises(ModelStoreError, match="cannot name a model"):
        convert_checkpoint(checkpoint, store, convert_script, name="two words")
    with pytest.raises(ModelStoreError, match="bundled model's name"):
        convert_checkpoint(checkpoint, store, convert_script, name="gemma-3-270m")
    with pytest.raises(SetupError, match="hearth setup"):
        convert_checkpoint(checkpoint, store, tmp_path / "convert_hf_to_gguf.py")
    store.import_file(write_gguf(tmp_path / "x.gguf"), name="tiny-llama:F16")
    with pytest.raises(ModelStoreError, match=r"'tiny-llama:F16' already exists.*--name"):
        convert_checkpoint(checkpoint, store, convert_script)
    assert leftovers(store) == []


def test_missing_python_packages_are_named(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faked: this venv has every package, so the lookup is made to miss sentencepiece (needed
    for the checkpoint's tokenizer.model) and torch."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("sentencepiece", "torch") else real(name, *a),
    )
    with pytest.raises(SetupError) as failed:
        check_packages(tiny_checkpoint)
    assert "Python packages torch, sentencepiece" in str(failed.value)
    assert INSTALL_HINT in str(failed.value)


def test_downloads_a_hub_checkpoint(
    store: ModelStore, tiny_checkpoint: Path, convert_script: Path, fake_hub: FakeHub
) -> None:
    for file in tiny_checkpoint.iterdir():
        fake_hub.add_file("acme/Tiny-Llama", file.name, file)
    fake_hub.add_file("acme/Tiny-Llama", "original/consolidated.pth", b"not needed")
    fake_hub.add_file("acme/Tiny-Llama", "README.md", b"# not needed")
    checkpoint = download_checkpoint(HubRef("acme/Tiny-Llama"), store)
    assert checkpoint.folder == checkpoint_folder(store, "acme/Tiny-Llama")
    assert checkpoint.source == f"acme/Tiny-Llama (Hugging Face Hub, {COMMIT})"
    assert sorted(p.name for p in checkpoint.folder.iterdir() if p.suffix != ".sha256") == sorted(
        p.name for p in tiny_checkpoint.iterdir()
    )
    for file in tiny_checkpoint.iterdir():  # the same bytes, checked against the hub's sha256
        assert (checkpoint.folder / file.name).read_bytes() == file.read_bytes()
    model = convert_checkpoint(checkpoint, store, convert_script)
    assert model.name == "acme/Tiny-Llama:F16"
    assert model.source == checkpoint.source
    # Downloading again fetches nothing: every file is there and verified.
    before = fake_hub.downloads_of("model.safetensors")
    download_checkpoint(HubRef("acme/Tiny-Llama"), store)
    assert fake_hub.downloads_of("model.safetensors") == before
    remove_download(store, checkpoint)
    assert not (store.models_dir / "checkpoints").exists()
    assert model.path.is_file()


def test_hub_repositories_that_are_not_checkpoints(
    store: ModelStore, fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.add_file("acme/Tiny-GGUF", "tiny-Q4_K_M.gguf", write_gguf(tmp_path / "t.gguf"))
    with pytest.raises(ModelStoreError, match=r"no \*.safetensors.*hearth pull acme/Tiny-GGUF"):
        download_checkpoint(HubRef("acme/Tiny-GGUF"), store)
    fake_hub.add_file("acme/weights-only", "model.safetensors", b"x")
    with pytest.raises(ModelStoreError, match=r"no config.json"):
        download_checkpoint(HubRef("acme/weights-only"), store)
    with pytest.raises(PullError, match="no model repository acme/missing"):
        download_checkpoint(HubRef("acme/missing"), store)
    assert not (store.models_dir / "checkpoints").exists()


def test_remove_download_stays_in_the_checkpoints_folder(store: ModelStore, tmp_path: Path) -> None:
    outside = tmp_path / "mine"
    outside.mkdir()
    remove_download(store, Checkpoint(outside, "x", "x"))
    assert outside.is_dir()


def _running(needle: str) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes().decode(errors="replace"):
                return True
        except OSError:
            continue
    return False
