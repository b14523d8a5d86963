"""`hearth doctor` lists every engine: available or not, its version, and what to install."""

from __future__ import annotations

import importlib.util
import os
import platform
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hearth.config import Settings
from hearth.engines.gpu import GPU, Accelerators
from hearth.engines.vllm import engine as vllm_engine
from hearth.errors import SetupError

# The mlx row's answer depends on the machine alone: elsewhere than on Apple silicon the engine
# cannot run at all; there, it is usable once mlx-lm is installed.
if sys.platform == "darwin" and platform.machine() == "arm64":
    MLX_ANSWER = "mlx_lm.server" if importlib.util.find_spec("mlx_lm") else "pip install mlx-lm"
else:
    MLX_ANSWER = "needs a Mac with Apple silicon"


def doctor(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "hearth", "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250", **env},
        check=False,
    )
    return result.stdout


def test_every_engine_is_listed_with_its_state(tmp_path: Path, llama_server_binary: Path) -> None:
    out = doctor({"HEARTH_LLAMA_SERVER": str(llama_server_binary), "PATH": "/usr/bin:/bin"})
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 3}
    for engine in ("llama.cpp", "transformers", "vllm", "mlx", "mlx-vlm"):
        assert f"{engine} engine" in rows, out
    assert "ok" in rows["llama.cpp engine"] and str(llama_server_binary) in rows["llama.cpp engine"]
    assert "ok" in rows["transformers engine"]
    assert "sentence-transformers" in rows["transformers engine"]
    assert "pip install vllm" in rows["vllm engine"]
    assert MLX_ANSWER in rows["mlx engine"], rows["mlx engine"]
    assert "none" in rows["GPU"]


def test_a_gpu_is_shown(tmp_path: Path, llama_server_binary: Path) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, NVIDIA L4, 23034, 22000, 550.1'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    out = doctor(
        {"HEARTH_LLAMA_SERVER": str(llama_server_binary), "PATH": f"{tmp_path}:/usr/bin:/bin"}
    )
    assert "nvidia: NVIDIA L4 (22 GiB)" in out


def test_vllm_installed_without_a_gpu_says_it_needs_one(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    monkeypatch.setattr(vllm_engine, "vllm_version", lambda: "0.11.0")
    monkeypatch.setattr(vllm_engine, "locate_vllm", _no_gpu)
    row = vllm_engine.status("vllm", settings, Accelerators("none"))
    assert (row.available, row.version) == (False, "0.11.0")
    assert "needs an NVIDIA GPU" in row.detail
    monkeypatch.setattr(vllm_engine, "locate_vllm", lambda accelerators: "/usr/bin/vllm")
    gpu = Accelerators("nvidia", (GPU(0, "L4", 1, 1),))
    assert vllm_engine.status("vllm", settings, gpu).available


def _no_gpu(accelerators: Accelerators) -> str:
    raise SetupError("the vllm engine needs an NVIDIA GPU")
