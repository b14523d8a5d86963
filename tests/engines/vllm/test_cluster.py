"""A vLLM model over several GPUs and nodes: the settings that say how, the combinations that are
refused, the layout checked against this node's GPUs, and the environment for a Ray cluster."""

from __future__ import annotations

from typing import Any

import pytest

from hearth.config import ModelSettings, VLLMSettings
from hearth.engines.gpu import GPU, Accelerators
from hearth.engines.vllm import cluster
from hearth.engines.vllm.cluster import check_layout, cluster_env, require_ray, world_size
from hearth.errors import ConfigError, SetupError


def node_with(gpus: int) -> Accelerators:
    return Accelerators(
        "nvidia", tuple(GPU(i, "H100", 80 * 2**30, 79 * 2**30) for i in range(gpus))
    )


@pytest.mark.parametrize(
    ("vllm", "message"),
    [
        ({"ray_address": "10.0.0.1:6379"}, "needs distributed_executor_backend: ray"),
        (
            {"distributed_executor_backend": "mp", "ray_address": "10.0.0.1:6379"},
            "needs distributed_executor_backend: ray",
        ),
        (
            {"distributed_executor_backend": "ray", "ray_address": "ray://head:10001"},
            "Ray Client address, which vLLM cannot use",
        ),
        (
            {"distributed_executor_backend": "ray", "ray_address": "http://head:6379"},
            "is not HOST:PORT",
        ),
        ({"distributed_executor_backend": "ray", "ray_address": "head"}, "is not HOST:PORT"),
        ({"distributed_executor_backend": "kubernetes"}, "distributed_executor_backend"),
        ({"host_ip": "gpu-node-2"}, "host_ip"),
        ({"network_interface": "^docker,lo"}, "not a network interface name"),
        ({"network_interface": "a-name-much-too-long"}, "not a network interface name"),
        ({"env": {"RAY_ADDRESS": "10.0.0.1:6379"}}, "set by vllm.ray_address"),
        ({"env": {"GLOO_SOCKET_IFNAME": "eth1"}}, "set by vllm.network_interface"),
        ({"env": {"NCCL IB": "x"}}, "not an environment variable name"),
    ],
)
def test_invalid_combinations_are_refused_naming_the_fix(
    vllm: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ModelSettings.model_validate({"model": "x", "engine": "vllm", "vllm": vllm})


@pytest.mark.parametrize("address", ["10.0.0.1:6379", "ray-head.vllm.svc:6379", "[fd00::1]:6379"])
def test_the_addresses_of_an_existing_cluster_are_accepted(address: str) -> None:
    settings = VLLMSettings(distributed_executor_backend="ray", ray_address=address)
    assert cluster_env(settings) == {"RAY_ADDRESS": address}
    assert VLLMSettings(distributed_executor_backend="ray", ray_address="auto").ray_address


def test_a_model_larger_than_this_node_must_use_the_ray_backend() -> None:
    layout = {"tensor_parallel_size": 4, "pipeline_parallel_size": 2}
    assert world_size(VLLMSettings(**layout)) == 8
    for backend in (None, "mp"):
        settings = VLLMSettings(**layout, distributed_executor_backend=backend)
        with pytest.raises(ConfigError) as refused:
            check_layout("qwen", settings, node_with(4))
        assert str(refused.value).startswith("models.qwen.vllm: ")
        assert "= 8 GPUs, and this node has 4" in str(refused.value)
        assert "distributed_executor_backend: ray" in str(refused.value)
    # Tensor parallel inside each node, pipeline stages across nodes: nothing to say.
    over_ray = VLLMSettings(**layout, distributed_executor_backend="ray")
    assert check_layout("qwen", over_ray, node_with(4)) is None
    # On one node large enough, any backend.
    assert check_layout("qwen", VLLMSettings(**layout), node_with(8)) is None


def test_tensor_parallelism_across_nodes_is_warned_about() -> None:
    settings = VLLMSettings(tensor_parallel_size=8, distributed_executor_backend="ray")
    warning = check_layout("qwen", settings, node_with(4))
    assert warning is not None
    assert "tensor_parallel_size 8 is more than this node's 4 GPUs" in warning
    assert check_layout("qwen", settings, node_with(8)) is None


def test_the_ray_backend_needs_ray_where_vllm_is_installed_beside_hearth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    over_ray = VLLMSettings(distributed_executor_backend="ray")
    monkeypatch.setattr(cluster, "ray_version", lambda: None)
    with pytest.raises(SetupError, match=r"needs Ray.*pip install 'ray\[default\]'"):
        require_ray(over_ray, vllm_here=True)
    require_ray(over_ray, vllm_here=False)  # another environment's vllm: not ours to judge
    require_ray(VLLMSettings(distributed_executor_backend="mp"), vllm_here=True)
    monkeypatch.setattr(cluster, "ray_version", lambda: "2.49.0")
    require_ray(over_ray, vllm_here=True)


def test_without_cluster_settings_the_environment_is_left_alone() -> None:
    assert cluster_env(VLLMSettings()) == {}
    assert cluster_env(VLLMSettings(distributed_executor_backend="ray")) == {}
    assert cluster_env(VLLMSettings(network_interface="ib0")) == {
        "NCCL_SOCKET_IFNAME": "ib0",
        "GLOO_SOCKET_IFNAME": "ib0",
    }
