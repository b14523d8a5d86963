"""A tiny Llama and random LoRA adapters for it, as Hugging Face folders and as GGUF files,
built once per test session (the `tiny_lora` fixture in tests/conftest.py) with llama.cpp's own
converters, called directly, so the adapter tests do not depend on the code they test."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hearth.config import default_cache_dir
from hearth.engines.llama_cpp.locate import (
    CONVERT_HF_SCRIPT,
    CONVERT_LORA_SCRIPT,
    conversion_script,
)
from support.tiny_models import make_random_lora, make_tiny_llama


@dataclass(frozen=True)
class TinyLora:
    base: Path  # the Hugging Face checkpoint folder
    base_gguf: Path  # f16
    peft: dict[str, Path]  # PEFT adapter folders: "one", "two"
    gguf: dict[str, Path]  # the same, converted: "one", "two"
    other_base_gguf: Path  # a narrower tiny Llama (hidden size 128)
    other_gguf: Path  # a LoRA for that one: does not fit `base_gguf`
    script: Path  # convert_lora_to_gguf.py

    @property
    def tools_dir(self) -> Path:
        return default_cache_dir() / "tools"


def build_tiny_lora(root: Path) -> TinyLora:
    tools = default_cache_dir() / "tools"
    hf_script = conversion_script(tools, CONVERT_HF_SCRIPT)
    lora_script = conversion_script(tools, CONVERT_LORA_SCRIPT)
    if not lora_script.is_file():
        raise RuntimeError(f"{lora_script} is missing: run `hearth setup` (or `make test`) first")
    base = make_tiny_llama(root / "base")
    base_gguf = _convert([hf_script, base], root / "base.gguf")
    peft = {name: make_random_lora(root / f"lora-{name}", base, seed=seed)
            for name, seed in (("one", 1), ("two", 2))}  # fmt: skip
    gguf = {
        name: _convert([lora_script, folder, "--base", base], root / f"{name}.gguf")
        for name, folder in peft.items()
    }
    other = make_tiny_llama(root / "other", hidden_size=128)
    other_gguf = _convert([hf_script, other], root / "other.gguf")
    other_lora = make_random_lora(root / "lora-other", other)
    other_lora_gguf = _convert([lora_script, other_lora, "--base", other], root / "other-lora.gguf")
    return TinyLora(base, base_gguf, peft, gguf, other_gguf, other_lora_gguf, lora_script)


def _convert(args: list[Path | str], out: Path) -> Path:
    argv = [sys.executable, *map(str, args), "--outfile", str(out), "--outtype", "f16"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return out
