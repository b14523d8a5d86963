"""The `vllm serve` command line, its settings, and the errors without vLLM or a GPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hearth.config import ModelSettings, VLLMSettings
from hearth.engines.base import Capabilities
from hearth.engines.gpu import GPU, Accelerators, detect_accelerators
from hearth.engines.vllm import launcher as vllm_launcher
from hearth.engines.vllm.launcher import VLLMLauncher, locate_vllm
from hearth.secrets import Secret
from support.engine_checks import answers_a_completion
from support.hf_models import write_tiny_chat_model

NVIDIA = Accelerators("nvidia", (GPU(0, "H100", 80 * 2**30, 79 * 2**30),))


def test_command_carries_every_setting() -> None:
    settings = VLLMSettings(
        tensor_parallel_size=2,
        gpu_memory_utilization=0.85,
        max_model_len=8192,
        quantization="awq",
        lora_modules={"sql": "/adapters/sql", "chat": "/adapters/chat"},
        max_lora_rank=32,
        extra_args=["--enforce-eager"],
    )
    command = VLLMLauncher(
        "/usr/bin/vllm", "Qwen/Qwen2.5-7B-Instruct", "qwen", settings, dtype="bfloat16"
    ).command("127.0.0.1", 8123)
    argv = command.argv
    assert argv[:3] == ["/usr/bin/vllm", "serve", "Qwen/Qwen2.5-7B-Instruct"]
    pairs = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--served-model-name") + 1] == "qwen"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.85"
    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    assert argv[argv.index("--quantization") + 1] == "awq"
    lora = argv.index("--lora-modules")
    assert "--enable-lora" in argv
    assert argv[lora + 1 : lora + 3] == ["sql=/adapters/sql", "chat=/adapters/chat"]
    assert argv[argv.index("--max-lora-rank") + 1] == "32"
    assert argv[-1] == "--enforce-eager"
    assert command.health_path == "/health"
    assert "--runner" not in pairs


def test_unset_settings_leave_vllm_defaults_and_pooling_tasks_use_the_pooling_runner() -> None:
    argv = VLLMLauncher("vllm", "/m", "m").command("127.0.0.1", 1).argv
    for flag in ("--tensor-parallel-size", "--gpu-memory-utilization", "--enable-lora", "--dtype"):
        assert flag not in argv
    embed = VLLMLauncher(
        "vllm", "/m", "m", task="embeddings", capabilities=Capabilities(embeddings=True)
    )
    assert embed.command("h", 1).argv[-4:] == ["--runner", "pooling", "--convert", "embed"]


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        ModelSettings.model_validate({"model": "x", "vllm": {"gpu_memory_utilization": 1.5}})
    with pytest.raises(ValueError, match="tensor_paralel_size"):
        ModelSettings.model_validate({"model": "x", "vllm": {"tensor_paralel_size": 2}})


def test_missing_vllm_or_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_launcher.shutil, "which", lambda name: None)
    with pytest.raises(vllm_launcher.SetupError, match="pip install vllm"):
        locate_vllm(NVIDIA)
    monkeypatch.setattr(vllm_launcher.shutil, "which", lambda name: "/usr/bin/vllm")
    with pytest.raises(vllm_launcher.SetupError, match="needs an NVIDIA GPU"):
        locate_vllm(Accelerators("none", detail="no GPU found (Linux x86_64)"))
    assert locate_vllm(NVIDIA) == "/usr/bin/vllm"


@pytest.mark.skipif(
    shutil.which("vllm") is None or detect_accelerators().kind != "nvidia",
    reason="needs vLLM installed and an NVIDIA GPU; this machine has neither",
)
async def test_vllm_serves_a_tiny_model_for_real(tmp_path: Path) -> None:
    model = write_tiny_chat_model(tmp_path / "tiny-chat")
    settings = VLLMSettings(gpu_memory_utilization=0.3, max_model_len=256)
    launcher = VLLMLauncher(locate_vllm(detect_accelerators()), str(model), "tiny", settings)
    await answers_a_completion(launcher, tmp_path / "vllm.log")


def test_tensor_2_by_pipeline_2_over_a_ray_cluster_builds_this_command_and_environment() -> None:
    settings = VLLMSettings(
        tensor_parallel_size=2,
        pipeline_parallel_size=2,
        distributed_executor_backend="ray",
        ray_address="10.0.0.1:6379",
        host_ip="10.0.0.2",
        network_interface="eth1",
        env={"NCCL_IB_HCA": "mlx5"},
    )
    launcher = VLLMLauncher(
        "/opt/vllm/bin/vllm",
        "Qwen/Qwen2.5-72B-Instruct",
        "qwen",
        settings,
        env={"NCCL_IB_HCA": Secret("mlx5")},
    )
    command = launcher.command("127.0.0.1", 8123)
    assert command.argv == [
        "/opt/vllm/bin/vllm", "serve", "Qwen/Qwen2.5-72B-Instruct",
        "--host", "127.0.0.1",
        "--port", "8123",
        "--served-model-name", "qwen",
        "--tensor-parallel-size", "2",
        "--pipeline-parallel-size", "2",
        "--distributed-executor-backend", "ray",
    ]  # fmt: skip
    assert command.env == {
        "VLLM_NO_USAGE_STATS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "NCCL_IB_HCA": "mlx5",
        "RAY_ADDRESS": "10.0.0.1:6379",
        "VLLM_HOST_IP": "10.0.0.2",
        "NCCL_SOCKET_IFNAME": "eth1",
        "GLOO_SOCKET_IFNAME": "eth1",
    }


def test_one_node_sets_no_cluster_environment() -> None:
    settings = VLLMSettings(tensor_parallel_size=4, distributed_executor_backend="mp")
    command = VLLMLauncher("vllm", "/m", "m", settings).command("127.0.0.1", 1)
    assert command.argv[-2:] == ["--distributed-executor-backend", "mp"]
    assert command.env == {"VLLM_NO_USAGE_STATS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
