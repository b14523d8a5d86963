"""The tiny Gemma-3-style vision-language model (support.tiny_models) as llama.cpp files: the text
model and its projector, converted once per test session with llama.cpp's own converter, called
directly, so the vision tests do not depend on the code they test. Several test folders use it;
it is built under the session's base temporary folder, once, whichever asks first."""

from __future__ import annotations

import base64
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hearth.config import default_cache_dir
from hearth.engines.llama_cpp.locate import conversion_script
from support.tiny_models import IMAGE_SIZE, make_tiny_gemma3_vlm, png


@dataclass(frozen=True)
class TinyVLM:
    checkpoint: Path  # the Hugging Face folder
    text: Path  # the text model, f16 GGUF
    mmproj: Path  # its projector, f16 GGUF


def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> TinyVLM:
    root = tmp_path_factory.getbasetemp() / "tiny-vlm"
    built = TinyVLM(root / "checkpoint", root / "tiny-vlm-F16.gguf", root / "mmproj-F16.gguf")
    if built.text.is_file() and built.mmproj.is_file():
        return built
    script = conversion_script(default_cache_dir() / "tools")
    if not script.is_file():
        pytest.fail(f"{script} is missing: run `hearth setup` (or `make test`) first")
    make_tiny_gemma3_vlm(built.checkpoint)
    for extra, out in (([], built.text), (["--mmproj"], built.mmproj)):
        argv = [sys.executable, str(script), str(built.checkpoint), *extra]
        argv += ["--outfile", str(out), "--outtype", "f16"]
        done = subprocess.run(argv, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    return built


def image_b64(rgb: tuple[int, int, int] = (200, 30, 30), size: int = IMAGE_SIZE) -> str:
    """A one-colour PNG of the model's image size, base64."""
    return base64.b64encode(png(size, size, rgb)).decode()


def image_data_url(rgb: tuple[int, int, int] = (200, 30, 30), size: int = IMAGE_SIZE) -> str:
    return f"data:image/png;base64,{image_b64(rgb, size)}"
