"""The `vllm serve` command line for one model, and finding vLLM and a GPU for it."""

from __future__ import annotations

import importlib.metadata
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hearth.config import VLLMSettings
from hearth.engines.base import Capabilities, EngineCommand
from hearth.engines.gpu import Accelerators
from hearth.engines.vllm.cluster import cluster_env
from hearth.errors import SetupError
from hearth.secrets import Secret

INSTALL_HINT = "pip install vllm (Linux with an NVIDIA GPU and CUDA)"


def vllm_version() -> str | None:
    try:
        return importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return None


def locate_vllm(accelerators: Accelerators) -> str:
    """The `vllm` command, after checking there is a GPU for it; else a SetupError with the fix."""
    binary = shutil.which("vllm")
    if binary is None:
        raise SetupError(f"the vllm engine is not installed (no `vllm` on PATH); {INSTALL_HINT}")
    if accelerators.kind != "nvidia":
        raise SetupError(
            f"the vllm engine needs an NVIDIA GPU, and this machine has none "
            f"({accelerators.describe()}); serve the model with engine: transformers, "
            "or a GGUF of it with llama.cpp"
        )
    return binary


@dataclass(frozen=True)
class VLLMLauncher:
    binary: str
    model: str  # a folder or a hub repository id
    alias: str
    settings: VLLMSettings = field(default_factory=VLLMSettings)
    task: str = "chat"
    dtype: str | None = None
    capabilities: Capabilities = field(default=Capabilities(chat=True, completion=True, tools=True))
    # The entry's vllm.env, resolved: a credential stays a Secret until the process gets it.
    env: Mapping[str, Secret] = field(default_factory=dict)
    kind: str = "vllm"

    @property
    def model_file(self) -> None:
        return None  # no single model file for Ollama's listings to read

    def command(self, host: str, port: int) -> EngineCommand:
        s = self.settings
        argv = [
            self.binary, "serve", self.model,
            "--host", host,
            "--port", str(port),
            "--served-model-name", self.alias,
        ]  # fmt: skip
        if self.task == "embeddings":
            argv += ["--runner", "pooling", "--convert", "embed"]
        elif self.task == "rerank":
            argv += ["--runner", "pooling"]
        options: list[tuple[str, Any]] = [
            ("--tensor-parallel-size", s.tensor_parallel_size),
            ("--pipeline-parallel-size", s.pipeline_parallel_size),
            ("--gpu-memory-utilization", s.gpu_memory_utilization),
            ("--max-model-len", s.max_model_len),
            ("--dtype", self.dtype),
            ("--quantization", s.quantization),
            ("--distributed-executor-backend", s.distributed_executor_backend),
        ]
        for flag, value in options:
            if value is not None:
                argv += [flag, str(value)]
        if s.lora_modules:
            argv += ["--enable-lora", "--lora-modules"]
            argv += [f"{name}={path}" for name, path in s.lora_modules.items()]
            if s.max_lora_rank is not None:
                argv += ["--max-lora-rank", str(s.max_lora_rank)]
        argv += s.extra_args
        # Values go in the environment, never on the command line that the engine log records.
        # Neither vLLM nor the Ray it may start reports usage to their makers from here.
        env = {"VLLM_NO_USAGE_STATS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        env |= {name: value.reveal() for name, value in self.env.items()}
        env |= cluster_env(s)
        # vLLM answers /health with 200 once the model is loaded.
        return EngineCommand(argv=argv, env=env, health_path="/health")

    def prepare_request(self, body: dict[str, Any]) -> None:
        return None
