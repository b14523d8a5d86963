"""Choosing a local model's engine (setting, format, hardware) and building its launcher."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hearth.config import ModelSettings
from hearth.deployments.build import build_catalogue
from hearth.deployments.local_engines import build_launcher, choose_engine
from hearth.engines import gpu
from hearth.engines.gpu import GPU, Accelerators
from hearth.engines.transformers.launcher import TransformersLauncher
from hearth.errors import ConfigError
from hearth.routing import local_engines
from hearth.settings_layers import load_settings
from support.gguf_files import write_gguf
from support.hf_models import minilm_dir

CPU = Accelerators("none")
NVIDIA = Accelerators("nvidia", (GPU(0, "H100", 80 * 2**30, 79 * 2**30),))


def catalogue_for(tmp_path: Path, yaml_text: str):  # type: ignore[no-untyped-def]
    config = tmp_path / "hearth.yaml"
    config.write_text(yaml_text)
    settings = load_settings(config, environ={})
    return build_catalogue(settings, tmp_path / "llama-server", tmp_path / "bundled.gguf")


def test_the_format_picks_the_engine_unless_the_entry_names_one(tmp_path: Path) -> None:
    folder = str(minilm_dir())
    assert choose_engine("a", ModelSettings(model="x.gguf"), False, NVIDIA) == "llama.cpp"
    assert choose_engine("a", ModelSettings(model="stored"), True, CPU) == "llama.cpp"
    assert choose_engine("a", ModelSettings(model=folder), False, CPU) == "transformers"
    named = ModelSettings(model="org/repo", engine="vllm")
    assert choose_engine("a", named, False, CPU) == "vllm"
    with pytest.raises(ConfigError, match="nor a Hugging Face model folder"):
        choose_engine("a", ModelSettings(model=str(tmp_path)), False, CPU)


def test_a_folder_prefers_vllm_on_an_nvidia_gpu_when_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ModelSettings(model=str(minilm_dir()))
    monkeypatch.setattr(local_engines, "vllm_version", lambda: "0.11.0")
    assert choose_engine("a", model, False, NVIDIA) == "vllm"
    monkeypatch.setattr(local_engines, "vllm_version", lambda: None)
    assert choose_engine("a", model, False, NVIDIA) == "transformers"


def test_model_folders_are_served_by_the_worker_with_their_task(tmp_path: Path) -> None:
    catalogue = catalogue_for(
        tmp_path,
        f"models:\n  emb:\n    model: {minilm_dir()}\n"
        f"  rr:\n    model: {minilm_dir()}\n    task: rerank\n    parallel: 2\n",
    )
    emb, rerank = catalogue.local("emb"), catalogue.local("rr")
    assert isinstance(emb.launcher, TransformersLauncher)
    assert emb.capabilities.names() == ["embeddings"]
    assert rerank.capabilities.names() == ["rerank"]
    assert rerank.slots == 2
    assert emb.memory_bytes > 90_000_000
    argv = emb.launcher.command("127.0.0.1", 1).argv
    assert argv[argv.index("--task") + 1] == "embeddings"


def test_engines_this_machine_cannot_run_are_config_errors_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu, "is_apple_silicon", lambda: False)
    settings = load_settings(None, environ={})
    for engine, message in (
        ("vllm", "vllm"),
        ("mlx", "Apple silicon"),
        ("mlx-vlm", "Apple silicon"),
    ):
        model = ModelSettings(model="org/repo", engine=engine)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=f"models.x: .*{message}"):
            build_launcher("x", model, engine, settings, CPU)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="serves a Hugging Face model folder"):
        build_launcher("x", ModelSettings(model="org/repo"), "transformers", settings, CPU)


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


def test_an_unknown_engine_or_task_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\.x\.engine"):
        catalogue_for(tmp_path, "models:\n  x:\n    model: gemma-3-270m\n    engine: tensorrt\n")
    with pytest.raises(ConfigError, match=r"models\.x\.task"):
        catalogue_for(tmp_path, "models:\n  x:\n    model: gemma-3-270m\n    task: vision\n")
