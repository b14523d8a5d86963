"""How one vLLM model spreads over GPUs: its tensor x pipeline layout checked against this
node's GPUs, and the environment that points `vllm serve` at a Ray cluster across nodes."""

from __future__ import annotations

import importlib.metadata

from hearth.config import VLLMSettings
from hearth.engines.gpu import Accelerators
from hearth.errors import ConfigError, SetupError

RAY_INSTALL_HINT = "pip install 'ray[default]' beside vLLM (the vllm/vllm-openai image has it)"
DOCS = "docs/engines.md#vllm-across-nodes"


def ray_version() -> str | None:
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return None


def world_size(settings: VLLMSettings) -> int:
    """The GPUs the model runs on: tensor_parallel_size x pipeline_parallel_size."""
    return (settings.tensor_parallel_size or 1) * (settings.pipeline_parallel_size or 1)


def check_layout(name: str, settings: VLLMSettings, accelerators: Accelerators) -> str | None:
    """A ConfigError when the model needs more GPUs than this node has and is not spread over a
    Ray cluster (vLLM's `mp` backend stays on one node); a warning to log when tensor parallelism
    would cross nodes; else None."""
    tensor = settings.tensor_parallel_size or 1
    pipeline = settings.pipeline_parallel_size or 1
    world, here = world_size(settings), len(accelerators.gpus)
    if world <= here:
        return None
    key = f"models.{name}.vllm"
    if settings.distributed_executor_backend != "ray":
        raise ConfigError(
            f"{key}: tensor_parallel_size {tensor} x pipeline_parallel_size {pipeline} = "
            f"{world} GPUs, and this node has {here}; spread the model over several nodes with "
            f"distributed_executor_backend: ray and a Ray cluster (see {DOCS}), or lower the sizes"
        )
    if tensor > here:
        # Tensor parallelism exchanges activations at every layer; across nodes that is the
        # network's speed, not NVLink's. vLLM's own advice is the layout below.
        return (
            f"{key}: tensor_parallel_size {tensor} is more than this node's {here} GPUs, so "
            "every layer waits on the network between nodes; the usual layout is "
            "tensor_parallel_size = GPUs per node and pipeline_parallel_size = nodes"
        )
    return None


def require_ray(settings: VLLMSettings, vllm_here: bool) -> None:
    """A SetupError when the ray backend is asked for and Ray is missing. Only checked where
    vLLM is installed in Hearth's own environment (`vllm_here`): a `vllm` on PATH from another
    environment has its own packages, which Hearth cannot see."""
    if settings.distributed_executor_backend == "ray" and vllm_here and ray_version() is None:
        raise SetupError(
            f"distributed_executor_backend: ray needs Ray, which is not installed; "
            f"{RAY_INSTALL_HINT}"
        )


def cluster_env(settings: VLLMSettings) -> dict[str, str]:
    """The environment that tells `vllm serve` which Ray cluster to join and which address and
    network interface its processes on this node use."""
    env: dict[str, str] = {}
    if settings.ray_address is not None:
        # vLLM calls ray.init() with no address, which reads RAY_ADDRESS; without it Ray looks
        # for the cluster this node joined, else starts a local one.
        env["RAY_ADDRESS"] = settings.ray_address
    if settings.host_ip is not None:
        env["VLLM_HOST_IP"] = settings.host_ip
    if settings.network_interface is not None:
        # NCCL carries the tensors, Gloo vLLM's control messages; both pick the first interface
        # they like unless told, often a docker bridge or a management network.
        env["NCCL_SOCKET_IFNAME"] = settings.network_interface
        env["GLOO_SOCKET_IFNAME"] = settings.network_interface
    return env
