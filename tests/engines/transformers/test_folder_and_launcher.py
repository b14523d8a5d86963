"""Reading a model folder's task and chat template, and the worker's command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hearth.engines.base import Capabilities
from hearth.engines.transformers import launcher as transformers_launcher
from hearth.engines.transformers.folder import inspect_folder
from hearth.engines.transformers.launcher import TransformersLauncher, require_transformers
from hearth.errors import ConfigError, SetupError
from support.hf_models import minilm_dir


def folder(path: Path, architectures: list[str], **files: object) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": architectures}))
    for name, content in files.items():
        (path / name.replace("__", ".")).write_text(json.dumps(content))
    (path / "model.safetensors").write_bytes(b"x" * 1000)
    return path


def test_the_task_comes_from_the_architecture(tmp_path: Path) -> None:
    minilm = inspect_folder(minilm_dir())
    assert minilm.task == "embeddings"
    assert minilm.capabilities() == Capabilities(embeddings=True)
    assert minilm.capabilities("rerank") == Capabilities(rerank=True)
    assert minilm.size_bytes > 80_000_000
    cross = inspect_folder(folder(tmp_path / "ce", ["BertForSequenceClassification"]))
    assert (cross.task, cross.is_cross_encoder) == ("rerank", True)
    chat = inspect_folder(
        folder(
            tmp_path / "chat", ["LlamaForCausalLM"], tokenizer_config__json={"chat_template": "x"}
        )
    )
    assert chat.task == "chat"
    assert chat.capabilities() == Capabilities(chat=True, completion=True)
    base = inspect_folder(folder(tmp_path / "base", ["GPT2LMHeadModel"]))
    assert base.capabilities() == Capabilities(completion=True)  # no template: no chat
    assert base.size_bytes == 1000


def test_a_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config\.json"):
        inspect_folder(tmp_path)


def test_command_runs_the_worker_offline(tmp_path: Path) -> None:
    command = TransformersLauncher(
        tmp_path, "minilm", "embeddings", device="cpu", dtype="float32", threads=2
    ).command("127.0.0.1", 7000)
    argv = command.argv
    assert argv[:3] == [sys.executable, "-m", "hearth.engines.transformers.worker"]
    for flag, value in (
        ("--model", str(tmp_path)),
        ("--port", "7000"),
        ("--task", "embeddings"),
        ("--name", "minilm"),
        ("--device", "cpu"),
        ("--dtype", "float32"),
        ("--threads", "2"),
    ):
        assert argv[argv.index(flag) + 1] == value
    assert command.health_path == "/health"
    assert command.env["HF_HUB_OFFLINE"] == "1"


def test_missing_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    require_transformers()  # installed here
    monkeypatch.setattr(
        transformers_launcher,
        "installed_versions",
        lambda: {"torch": "2.13.0", "transformers": None, "sentence-transformers": None},
    )
    with pytest.raises(
        SetupError, match=r"transformers, sentence-transformers.*hearth-gateway\[transformers\]"
    ):
        require_transformers()
