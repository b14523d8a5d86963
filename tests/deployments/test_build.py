"""Building the catalogue from the settings: names, aliases, model references, engines, preload."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hearth.deployments.build import build_catalogue
from hearth.errors import ConfigError
from hearth.models.store import ModelStore
from hearth.settings_layers import load_settings
from support.gguf_files import write_gguf


def catalogue_for(tmp_path: Path, yaml_text: str):  # type: ignore[no-untyped-def]
    config = tmp_path / "hearth.yaml"
    config.write_text(yaml_text)
    settings = load_settings(config, environ={})
    return build_catalogue(settings, tmp_path / "llama-server", tmp_path / "bundled.gguf")


def test_bundled_model_is_always_there_and_aliases_resolve(tmp_path: Path) -> None:
    gguf = tmp_path / "other.gguf"
    gguf.write_bytes(b"GGUF")
    catalogue = catalogue_for(
        tmp_path,
        f"models:\n  other:\n    model: {gguf}\n    aliases: [gpt-4o-mini]\n    keep_alive: 0\n",
    )
    assert catalogue.names() == ["gemma-3-270m", "gpt-4o-mini", "other"]
    other = catalogue.local("gpt-4o-mini")
    assert other.name == "other"
    assert other.keep_alive == 0
    assert other.launcher.model_path == gguf  # type: ignore[attr-defined]
    assert catalogue.local("gemma-3-270m").keep_alive == 300.0


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "models:\n  x:\n    model: /nope.gguf\n",
            r"models\.x\.model: ./nope\.gguf. is not a stored model",
        ),
        (
            "models:\n  x:\n    model: gemma-3-270m\n    aliases: [gemma-3-270m]\n",
            "used twice",
        ),
        ("preload: [ghost]\n", "preload: 'ghost' is not a local model"),
        (
            "models:\n  x:\n    model: gemma-3-270m\n    defaults: {temperature: 7}\n",
            r"models\.x\.defaults\.temperature: .*less than or equal to 2",
        ),
        (
            "models:\n  x:\n    model: gemma-3-270m\n    chat_template: nope\n",
            r"models\.x\.chat_template: 'nope' is neither a file nor a template",
        ),
    ],
)
def test_config_mistakes_are_named(tmp_path: Path, yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        catalogue_for(tmp_path, yaml_text)


def test_stored_models_are_servable_by_name_embedders_with_embedding_flags(
    tmp_path: Path,
) -> None:
    store = ModelStore(tmp_path / "data" / "models")
    store.import_file(write_gguf(tmp_path / "tiny-chat.gguf", chat_template="{{ x }}"))
    store.import_file(write_gguf(tmp_path / "tiny-bert.gguf", arch="bert", pooling_type=1))
    config = tmp_path / "hearth.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "models:\n  renamed:\n    model: tiny-chat\n    parallel: 1\n"
    )
    settings = load_settings(config, environ={})
    catalogue = build_catalogue(settings, tmp_path / "llama-server", tmp_path / "bundled.gguf")
    assert catalogue.names() == ["gemma-3-270m", "renamed", "tiny-bert", "tiny-chat"]
    bert = catalogue.local("tiny-bert")
    assert bert.capabilities.names() == ["embeddings"]
    argv = bert.launcher.command("127.0.0.1", 1).argv
    assert argv[argv.index("--pooling") + 1] == "mean"
    assert "--embedding" in argv
    assert "--jinja" not in argv
    renamed = catalogue.local("renamed")
    assert renamed.launcher.model_path == catalogue.local("tiny-chat").launcher.model_path  # type: ignore[attr-defined]
    assert renamed.launcher.settings.parallel == 1  # type: ignore[attr-defined]
    assert renamed.memory_bytes > (tmp_path / "tiny-chat.gguf").stat().st_size


def test_gguf_models_get_all_layers_on_a_gpu_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, NVIDIA L4, 23034, 22000, 550.1'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    chat = write_gguf(tmp_path / "chat.gguf", chat_template="{{ x }}")
    catalogue = catalogue_for(
        tmp_path,
        f"models:\n  auto:\n    model: {chat}\n  pinned:\n    model: {chat}\n    gpu_layers: 4\n",
    )
    auto = catalogue.local("auto").launcher.command("h", 1).argv
    pinned = catalogue.local("pinned").launcher.command("h", 1).argv
    assert auto[auto.index("--gpu-layers") + 1] == "999"
    assert pinned[pinned.index("--gpu-layers") + 1] == "4"


def test_a_reranker_gguf_is_started_with_reranking(tmp_path: Path) -> None:
    reranker = write_gguf(tmp_path / "rr.gguf", arch="bert", pooling_type=4)
    catalogue = catalogue_for(tmp_path, f"models:\n  rr:\n    model: {reranker}\n")
    deployment = catalogue.local("rr")
    assert deployment.capabilities.names() == ["rerank"]
    argv = deployment.launcher.command("h", 1).argv
    assert "--reranking" in argv
    assert argv[argv.index("--pooling") + 1] == "rank"


def test_llama_cpp_models_count_tokens_and_name_their_file(tmp_path: Path) -> None:
    chat = write_gguf(tmp_path / "chat.gguf", chat_template="{{ x }}")
    catalogue = catalogue_for(tmp_path, f"models:\n  chat:\n    model: {chat}\n")
    deployment = catalogue.local("chat")
    assert deployment.capabilities.token_counting
    file = deployment.launcher.model_file
    assert file is not None and file.path == chat
    assert file.settings.ctx_size == 16384
    bundled = catalogue.local("gemma-3-270m").launcher.model_file
    assert bundled is not None and bundled.chat_template is not None
    assert bundled.chat_template.name == "gemma3.jinja"


def test_without_llama_server_its_models_are_listed_but_unavailable(tmp_path: Path) -> None:
    settings = load_settings(None, environ={})
    catalogue = build_catalogue(settings, None, tmp_path / "bundled.gguf")
    unavailable = catalogue.local("gemma-3-270m").unavailable
    assert unavailable is not None and "needs llama-server" in unavailable


def test_an_unknown_engine_or_task_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\.x\.engine: 'tensorrt' is not an engine; known"):
        catalogue_for(tmp_path, "models:\n  x:\n    model: gemma-3-270m\n    engine: tensorrt\n")
    with pytest.raises(ConfigError, match=r"models\.x\.task"):
        catalogue_for(tmp_path, "models:\n  x:\n    model: gemma-3-270m\n    task: vision\n")
