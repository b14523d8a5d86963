"""Multimodal projectors (llama.cpp's `mmproj` GGUFs): telling one from a model, what it lets the
model take in (read from its metadata, never its name), and which of a hub repository's
projectors goes with a chosen model file.

A projector is a GGUF whose `general.type` is `mmproj` (architecture `clip`); it encodes images
into the text model's embedding space, and llama-server loads it beside the model (`--mmproj`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gguf import LlamaFileType

from hearth.errors import ModelStoreError
from hearth.models.gguf_info import read_gguf_header
from hearth.models.hub_ref import HubFile, quantization_of

# Precision taken when none of a repository's projectors matches the model's: F16 is what
# llama.cpp's own conversions publish and loses nothing that matters against F32 at half the size.
PREFERRED_PRECISION = "F16"


@dataclass(frozen=True)
class ProjectorInfo:
    """What a projector file says about itself."""

    path: Path
    projector_type: str | None  # clip.projector_type (gemma3, llava, qwen2vl_merger, …)
    vision: bool
    audio: bool
    quantization: str | None

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(name for name, has in (("vision", self.vision), ("audio", self.audio)) if has)


def is_projector(metadata: dict[str, Any]) -> bool:
    """Whether GGUF metadata describes a projector rather than a model."""
    return metadata.get("general.type") == "mmproj" or metadata.get("general.architecture") in (
        "clip",
        "mtmd",
    )


def read_projector(path: Path) -> ProjectorInfo:
    """The facts of a projector file; `ModelStoreError` saying what it is instead if it is not
    one (a text model given as the projector is the likely mistake)."""
    header = read_gguf_header(path)
    meta = header.metadata
    if not is_projector(meta):
        kind = meta.get("general.architecture") or "unknown"
        raise ModelStoreError(
            f"{path} is not a multimodal projector (its metadata says architecture {kind!r}, "
            f"type {meta.get('general.type')!r}); a projector is an mmproj-*.gguf file, made with "
            "`convert_hf_to_gguf.py --mmproj`"
        )
    projector_type = meta.get("clip.projector_type") or meta.get("clip.vision.projector_type")
    vision = meta.get("clip.has_vision_encoder")
    if vision is None:  # older converters wrote no flag: the vision keys are there or not
        vision = projector_type is not None or any(k.startswith("clip.vision.") for k in meta)
    audio = bool(meta.get("clip.has_audio_encoder"))
    quantization = _file_type(meta.get("general.file_type")) or quantization_of(path.name)
    return ProjectorInfo(
        path=path,
        projector_type=projector_type if isinstance(projector_type, str) else None,
        vision=bool(vision),
        audio=audio,
        quantization=quantization,
    )


def projector_capabilities(path: Path | None) -> tuple[str, ...]:
    """What a model's projector adds ("vision"), or nothing when it has none or it cannot be
    read (the engine then reports the file when it starts)."""
    if path is None or not path.is_file():
        return ()
    try:
        return read_projector(path).capabilities
    except ModelStoreError:
        return ()


def is_projector_name(name: str) -> bool:
    """The hub's convention for projector files: `mmproj*.gguf` (any folder)."""
    path = PurePosixPath(name)
    return path.suffix.lower() == ".gguf" and path.name.lower().startswith("mmproj")


def choose_projector(files: list[HubFile], model: HubFile, tag: str | None) -> HubFile | None:
    """The projector of a repository that belongs to `model` (tagged `tag`): among those in the
    model's folder (else anywhere in the repository), the one of the model's precision, else
    F16, else the smallest. None when the repository has none."""
    found = [f for f in files if is_projector_name(f.name)]
    folder = PurePosixPath(model.name).parent
    beside = [f for f in found if PurePosixPath(f.name).parent == folder]
    candidates = sorted(beside or found, key=lambda f: f.name)
    if not candidates:
        return None
    for wanted in (tag, PREFERRED_PRECISION):
        if wanted is None:
            continue
        matching = [f for f in candidates if (quantization_of(f.name) or "") == wanted.upper()]
        if matching:
            return matching[0]
    return min(candidates, key=lambda f: (f.size is None, f.size or 0, f.name))


def _file_type(value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        return LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return None
