"""Finding the llama-server and rpc-server binaries: the setting, then PATH, then Hearth's tools
folder."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hearth.engines.llama_cpp.flags import CMAKE_FLAGS, LLAMA_CPP_PYTHON_VERSION
from hearth.errors import SetupError

# llama.cpp is taken from this llama-cpp-python source distribution, which vendors a full tree.
BINARY_NAME = "llama-server"
# llama.cpp's RPC worker, built from the same tree and flags and cached beside llama-server
# under the name its docs use (its CMake target is ggml-rpc-server).
RPC_BINARY_NAME = "rpc-server"
RPC_BUILD_TARGET = "ggml-rpc-server"
# llama.cpp's quantizer (`hearth quantize`), built from the same tree and flags.
QUANTIZE_BINARY_NAME = "llama-quantize"
# The conversion scripts of the same tree (`hearth convert`), copied beside the binaries with the
# `gguf-py` and `conversion` packages they import: a script and its gguf writer must match the
# llama-server that reads the result.
CONVERT_HF_SCRIPT = "convert_hf_to_gguf.py"
CONVERT_LORA_SCRIPT = "convert_lora_to_gguf.py"
CONVERT_TREE = (CONVERT_HF_SCRIPT, CONVERT_LORA_SCRIPT, "conversion", "gguf-py")


def build_key() -> str:
    """Cache key of a built engine: source version, build flags, and the machine it was built for.

    Changing the build flags changes the key, so a cached binary built the old way is not reused.
    """
    flags = hashlib.sha256("\0".join(CMAKE_FLAGS).encode()).hexdigest()[:8]
    system = f"{platform.system().lower()}-{platform.machine()}"
    return f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}-{flags}-{system}"


def tools_binary(tools_dir: Path, name: str = BINARY_NAME) -> Path:
    return tools_dir / build_key() / "bin" / name


def conversion_script(tools_dir: Path, name: str = CONVERT_HF_SCRIPT) -> Path:
    """A conversion script of the pinned llama.cpp tree, as `hearth setup` keeps it."""
    return tools_dir / build_key() / "convert" / name


@dataclass(frozen=True)
class LocatedBinary:
    path: Path
    source: Literal["setting", "PATH", "tools"]


def locate_llama_server(configured: Path | None, tools_dir: Path) -> LocatedBinary:
    if configured is not None:
        if not (configured.is_file() and os.access(configured, os.X_OK)):
            raise SetupError(
                f"llama_server is set to {configured} (HEARTH_LLAMA_SERVER or config), "
                "which is not an executable file; fix the path or unset it to use the built one"
            )
        return LocatedBinary(configured, "setting")
    on_path = shutil.which(BINARY_NAME)
    if on_path:
        return LocatedBinary(Path(on_path), "PATH")
    built = tools_binary(tools_dir)
    if built.is_file() and os.access(built, os.X_OK):
        return LocatedBinary(built, "tools")
    raise SetupError(
        "llama-server was not found (not set by HEARTH_LLAMA_SERVER, not on PATH, "
        f"not in {built}). "
        "Run `hearth setup` to build it from source (about 6 minutes on 2 cores), "
        "or set HEARTH_LLAMA_SERVER to an existing llama-server binary."
    )


def locate_rpc_server(configured: Path | None, tools_dir: Path) -> LocatedBinary:
    """llama.cpp's rpc-server (for `hearth rpc-worker`), looked for as llama-server is: the
    setting (HEARTH_RPC_SERVER), then PATH, then the tools folder `hearth setup` builds into."""
    if configured is not None:
        if not (configured.is_file() and os.access(configured, os.X_OK)):
            raise SetupError(
                f"rpc_server is set to {configured} (HEARTH_RPC_SERVER or config), "
                "which is not an executable file; fix the path or unset it to use the built one"
            )
        return LocatedBinary(configured, "setting")
    on_path = shutil.which(RPC_BINARY_NAME)
    if on_path:
        return LocatedBinary(Path(on_path), "PATH")
    built = tools_binary(tools_dir, RPC_BINARY_NAME)
    if built.is_file() and os.access(built, os.X_OK):
        return LocatedBinary(built, "tools")
    raise SetupError(
        "rpc-server was not found (not set by HEARTH_RPC_SERVER, not on PATH, "
        f"not in {built}). "
        "Run `hearth setup` to build it with llama-server from source (`--force-build` if "
        "your llama-server comes from elsewhere), "
        "or set HEARTH_RPC_SERVER to an existing rpc-server binary built with -DGGML_RPC=ON."
    )


def optional_llama_server(configured: Path | None, tools_dir: Path) -> LocatedBinary | None:
    """The engine binary, or None when none was set and none is found: a gateway of remote
    deployments runs without it. A set path that is wrong is still an error to fix."""
    try:
        return locate_llama_server(configured, tools_dir)
    except SetupError:
        if configured is not None:
            raise
        return None


def not_installed(model: str) -> str:
    """What a client asking for a llama.cpp model hears from a Hearth started without
    llama-server (a gateway of remote deployments needs none)."""
    return (
        f"The model '{model}' needs llama-server, which was not found: run `hearth setup` to "
        "build it, or set HEARTH_LLAMA_SERVER to an existing llama-server binary, then restart "
        "Hearth."
    )


_VERSION_LINE = re.compile(r"version:\s*(.+)")


def engine_version(binary: Path) -> str:
    """What `llama-server --version` reports, e.g. '0.5.0-dev (build 1, commit 0c1e570)'."""
    try:
        result = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"cannot run {binary} --version: {exc}") from None
    output = result.stdout + result.stderr
    match = _VERSION_LINE.search(output)
    if result.returncode != 0 or not match:
        last = output.strip().splitlines()[-1:] or ["no output"]
        raise SetupError(f"{binary} --version failed (exit {result.returncode}): {last[0]}")
    return match.group(1).strip()
