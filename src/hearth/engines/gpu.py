"""Which accelerators this machine has (NVIDIA GPUs through `nvidia-smi`, Apple silicon's Metal
GPU through the platform), and the defaults that follow from them: llama.cpp GPU layers and a
VRAM budget. (Which engine a model format prefers on this hardware is each engine's claim.)"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

MIB = 1024 * 1024
NVIDIA_QUERY = "index,name,memory.total,memory.free,driver_version"
ALL_LAYERS = 999  # llama.cpp offloads min(this, the model's layers)

AcceleratorKind = Literal["nvidia", "metal", "none"]


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    memory_total: int  # bytes
    memory_free: int  # bytes
    driver: str | None = None


@dataclass(frozen=True)
class Accelerators:
    kind: AcceleratorKind
    gpus: tuple[GPU, ...] = ()
    detail: str = ""  # why none was found, or what was found, for `hearth doctor`

    @property
    def memory_total(self) -> int:
        return sum(gpu.memory_total for gpu in self.gpus)

    @property
    def memory_free(self) -> int:
        return sum(gpu.memory_free for gpu in self.gpus)

    def describe(self) -> str:
        if not self.gpus:
            return self.detail or "no GPU found"
        names = ", ".join(f"{g.name} ({g.memory_total / 2**30:.0f} GiB)" for g in self.gpus)
        return f"{self.kind}: {names}"


def parse_nvidia_smi(output: str) -> tuple[GPU, ...]:
    """Rows of `nvidia-smi --query-gpu=index,name,memory.total,memory.free,driver_version
    --format=csv,noheader,nounits` (memory in MiB)."""
    gpus = []
    for line in output.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4:
            continue
        try:
            index, total, free = int(fields[0]), int(float(fields[2])), int(float(fields[3]))
        except ValueError:
            continue
        driver = fields[4] if len(fields) > 4 and fields[4] else None
        gpus.append(GPU(index, fields[1], total * MIB, free * MIB, driver))
    return tuple(gpus)


def detect_nvidia(timeout: float = 10.0) -> Accelerators | None:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    argv = [binary, f"--query-gpu={NVIDIA_QUERY}", "--format=csv,noheader,nounits"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Accelerators("none", detail=f"nvidia-smi failed: {exc}")
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return Accelerators("none", detail=f"nvidia-smi exited {result.returncode}: {last[0]}")
    gpus = parse_nvidia_smi(result.stdout)
    if not gpus:
        return Accelerators("none", detail="nvidia-smi lists no GPU")
    return Accelerators("nvidia", gpus)


def is_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def detect_accelerators() -> Accelerators:
    """NVIDIA first (nvidia-smi on PATH), then Apple silicon's Metal GPU, else none."""
    nvidia = detect_nvidia()
    if nvidia is not None and nvidia.kind == "nvidia":
        return nvidia
    if is_apple_silicon():
        # Unified memory: the GPU can use most of the machine's RAM.
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return Accelerators("metal", (GPU(0, "Apple Metal GPU", total, total),))
    if nvidia is not None:
        return nvidia  # nvidia-smi is there but failed: say why
    return Accelerators("none", detail=f"no GPU found ({platform.system()} {platform.machine()})")


def default_gpu_layers(accelerators: Accelerators) -> int | None:
    """llama.cpp's --gpu-layers when the settings leave it unset: all layers on a GPU."""
    return ALL_LAYERS if accelerators.gpus else None


def vram_budget(accelerators: Accelerators, fraction: float = 0.9) -> int | None:
    """GPU memory local models may use: a share of what is free now (None: no GPU)."""
    if not accelerators.gpus:
        return None
    return int(accelerators.memory_free * fraction)
