"""A loopback fake Hugging Face Hub for the model store's tests, and a tiny Hugging Face
checkpoint with the llama.cpp tools that convert and quantize it (test_convert, test_quantize)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearth.config import default_cache_dir
from hearth.engines.llama_cpp.locate import (
    QUANTIZE_BINARY_NAME,
    conversion_script,
    tools_binary,
)
from support.fake_hub import FakeHub, fake_hub_environment
from support.tiny_models import make_tiny_llama


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    with fake_hub_environment(monkeypatch, tmp_path / "hf-home") as hub:
        yield hub


@pytest.fixture(scope="session")
def convert_script() -> Path:
    """llama.cpp's convert_hf_to_gguf.py, as `hearth setup` (`make test`) installs it."""
    script = conversion_script(default_cache_dir() / "tools")
    if not script.is_file():
        pytest.fail(f"{script} is missing: run `hearth setup` (or `make test`) first")
    return script


@pytest.fixture(scope="session")
def quantize_binary() -> Path:
    """llama.cpp's llama-quantize, built beside llama-server by `hearth setup`."""
    binary = tools_binary(default_cache_dir() / "tools", QUANTIZE_BINARY_NAME)
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `hearth setup` (or `make test`) first")
    return binary


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer Llama checkpoint folder with random weights (support.tiny_models)."""
    return make_tiny_llama(tmp_path_factory.mktemp("checkpoints") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_f16_gguf(
    tiny_checkpoint: Path, convert_script: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny checkpoint as an F16 GGUF, converted by the script directly (so the quantize
    tests do not depend on `hearth convert`)."""
    out = tmp_path_factory.mktemp("tiny-gguf") / "tiny-F16.gguf"
    argv = [sys.executable, str(convert_script), str(tiny_checkpoint)]
    done = subprocess.run(
        [*argv, "--outfile", str(out), "--outtype", "f16"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return out
