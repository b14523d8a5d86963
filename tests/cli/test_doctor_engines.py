"""`hearth doctor` lists every engine: available or not, its version, and what to install."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hearth.engines import status
from hearth.engines.gpu import GPU, Accelerators


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
    assert "ok" in rows["transformers engine"]
    assert "sentence-transformers" in rows["transformers engine"]
    assert "pip install vllm" in rows["vllm engine"]
    assert "Apple silicon" in rows["mlx engine"] or "pip install mlx-lm" in rows["mlx engine"]
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
    monkeypatch.setattr(status, "vllm_version", lambda: "0.11.0")
    monkeypatch.setattr(status, "locate_vllm", _no_gpu)
    row = status.vllm_status(Accelerators("none"))
    assert (row.available, row.version) == (False, "0.11.0")
    assert "needs an NVIDIA GPU" in row.detail
    monkeypatch.setattr(status, "locate_vllm", lambda accelerators: "/usr/bin/vllm")
    gpu = Accelerators("nvidia", (GPU(0, "L4", 1, 1),))
    assert status.vllm_status(gpu).available


def _no_gpu(accelerators: Accelerators) -> str:
    raise status.SetupError("the vllm engine needs an NVIDIA GPU")
