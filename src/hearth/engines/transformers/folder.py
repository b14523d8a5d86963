"""What a Hugging Face model folder holds, read from its JSON files without importing torch:
which task it serves, whether it has a chat template, whether it sees images, and its size on
disk."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hearth.engines.base import Capabilities
from hearth.errors import ConfigError

Task = Literal["chat", "embeddings", "rerank", "transcription"]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".npz")


@dataclass(frozen=True)
class FolderInfo:
    path: Path
    task: Task
    architectures: tuple[str, ...]
    has_chat_template: bool
    size_bytes: int
    is_cross_encoder: bool
    vision: bool = False  # an image-text-to-text model with an image processor

    def capabilities(self, task: Task | None = None) -> Capabilities:
        task = task or self.task
        if task == "chat":
            vision = self.vision and self.has_chat_template  # images come in chat messages
            return Capabilities(chat=self.has_chat_template, completion=True, vision=vision)
        if task == "embeddings":
            return Capabilities(embeddings=True)
        if task == "transcription":
            return Capabilities(transcription=True, streaming=False)
        return Capabilities(rerank=True)


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return value if isinstance(value, dict) else {}


def _has_image_processor(path: Path) -> bool:
    """Whether the folder's processor takes images: an image processor in
    preprocessor_config.json, or nested in processor_config.json (transformers 5 saves it
    there)."""
    if _json(path / "preprocessor_config.json").get("image_processor_type"):
        return True
    return isinstance(_json(path / "processor_config.json").get("image_processor"), dict)


def inspect_folder(path: Path) -> FolderInfo:
    """Read a model folder's config; the task it serves by default comes from its architecture:
    a sequence classifier reranks (a cross-encoder), a Whisper-family model transcribes, a causal
    LM chats (and sees images when it is an image-text-to-text model: a vision config and an
    image processor), anything else (or a sentence-transformers folder) embeds."""
    if not is_model_folder(path):
        raise ConfigError(f"{path} is not a Hugging Face model folder (no config.json)")
    config = _json(path / "config.json")
    architectures = tuple(str(a) for a in config.get("architectures") or ())
    cross_encoder = any(a.endswith("ForSequenceClassification") for a in architectures)
    sentence_transformers = (path / "modules.json").is_file()
    generative = any(
        a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "ForImageTextToText"))
        for a in architectures
    )
    vision = generative and "vision_config" in config and _has_image_processor(path)
    speech = config.get("model_type") == "whisper" or any(
        a.startswith("Whisper") for a in architectures
    )
    task: Task
    if cross_encoder:
        task = "rerank"
    elif speech:
        task = "transcription"
    elif generative and not sentence_transformers:
        task = "chat"
    else:
        task = "embeddings"
    tokenizer_config = _json(path / "tokenizer_config.json")
    processor_config = _json(path / "processor_config.json") if vision else {}
    has_template = (
        bool(tokenizer_config.get("chat_template"))
        or bool(processor_config.get("chat_template"))
        or any((path / name).is_file() for name in ("chat_template.jinja", "chat_template.json"))
    )
    size = sum(
        f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES
    )
    vision = vision and task == "chat"
    return FolderInfo(path, task, architectures, has_template, size, cross_encoder, vision)
