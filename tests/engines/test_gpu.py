"""GPU detection with a fake `nvidia-smi` on PATH, and the defaults that follow from it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hearth.engines import gpu
from hearth.engines.gpu import (
    ALL_LAYERS,
    Accelerators,
    default_gpu_layers,
    detect_accelerators,
    parse_nvidia_smi,
    vram_budget,
)

TWO_GPUS = (
    "0, NVIDIA H100 80GB HBM3, 81559, 80000, 550.54.15\n"
    "1, NVIDIA H100 80GB HBM3, 81559, 1000, 550.54.15\n"
)


def fake_nvidia_smi(folder: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(gpu, "is_apple_silicon", lambda: False)
    return path


def test_nvidia_gpus_are_read_from_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = tmp_path / "args"
    fake_nvidia_smi(
        tmp_path / "bin", f'echo "$@" > {args}\ncat <<EOF\n{TWO_GPUS}EOF\n', monkeypatch
    )
    found = detect_accelerators()
    assert found.kind == "nvidia"
    assert [g.index for g in found.gpus] == [0, 1]
    assert found.gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert found.gpus[0].memory_total == 81559 * 1024 * 1024
    assert found.memory_free == 81000 * 1024 * 1024
    assert found.gpus[1].driver == "550.54.15"
    assert "--query-gpu=index,name,memory.total,memory.free" in args.read_text()
    assert "nounits" in args.read_text()
    assert default_gpu_layers(found) == ALL_LAYERS
    assert vram_budget(found, 0.5) == 81000 * 1024 * 1024 // 2


def test_a_failing_nvidia_smi_means_no_gpu_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvidia_smi(
        tmp_path / "bin", "echo 'NVIDIA-SMI has failed: no driver' >&2\nexit 9\n", monkeypatch
    )
    found = detect_accelerators()
    assert found.kind == "none"
    assert "exited 9" in found.describe()
    assert "no driver" in found.describe()
    assert default_gpu_layers(found) is None
    assert vram_budget(found) is None


def test_no_nvidia_smi_and_not_a_mac_is_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(gpu, "is_apple_silicon", lambda: False)
    found = detect_accelerators()
    assert found == Accelerators("none", detail=found.detail)
    assert found.gpus == ()


def test_apple_silicon_is_a_metal_gpu_with_unified_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(gpu, "is_apple_silicon", lambda: True)
    found = detect_accelerators()
    assert found.kind == "metal"
    assert found.memory_total > 0
    assert default_gpu_layers(found) == ALL_LAYERS


def test_garbage_rows_are_skipped() -> None:
    assert parse_nvidia_smi("oops\n0, GPU, notanumber, 1\n\n2, A10, 24564, 24000\n") == (
        gpu.GPU(2, "A10", 24564 * 1024 * 1024, 24000 * 1024 * 1024, None),
    )
