"""The vLLM engine as the registry builds it: a model over a Ray cluster, its credentials kept
out of every log, and `hearth doctor`'s row. vLLM cannot be installed on a machine without an
NVIDIA GPU, so a small shell script stands in for the `vllm` command where one is started."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from hearth.config import ModelSettings
from hearth.engines.gpu import GPU, Accelerators
from hearth.engines.ports import free_port
from hearth.engines.process import EngineProcess
from hearth.engines.registry import default_registry
from hearth.engines.spec import EngineContext
from hearth.engines.vllm import engine as vllm_engine
from hearth.engines.vllm import launcher as vllm_launcher
from hearth.engines.vllm.launcher import INSTALL_HINT
from hearth.errors import ConfigError, EngineStartError
from hearth.models.store import ModelStore
from hearth.settings_layers import load_settings

FOUR_GPUS = Accelerators("nvidia", tuple(GPU(i, "H100", 80 * 2**30, 0) for i in range(4)))
TOKEN = "hf_Zq8sEcReTvAlUe0fTheTeStS5x2"


def context(tmp_path: Path, config: dict[str, object] | None = None) -> EngineContext:
    settings = load_settings(None, environ={}).model_copy(update=config or {})
    return EngineContext(settings, FOUR_GPUS, ModelStore(tmp_path / "models"), tmp_path / "b")


def fake_vllm(folder: Path) -> Path:
    """Stands in for `vllm serve`: writes down the token it was given, then exits, as vLLM does
    when it cannot reach its cluster."""
    script = folder / "vllm"
    script.write_text(
        '#!/bin/sh\necho "vllm $*"\nprintf %s "$HF_TOKEN" > "$RECEIPT"\n'
        'echo "RuntimeError: no Ray cluster at $RAY_ADDRESS"\nexit 1\n'
    )
    script.chmod(0o755)
    return script


def qwen_over_ray(**vllm: object) -> ModelSettings:
    return ModelSettings.model_validate(
        {
            "model": "Qwen/Qwen2.5-72B-Instruct",
            "engine": "vllm",
            "vllm": {
                "tensor_parallel_size": 4,
                "pipeline_parallel_size": 2,
                "distributed_executor_backend": "ray",
                "ray_address": "10.0.0.1:6379",
                **vllm,
            },
        }
    )


async def test_a_credential_reaches_vllm_and_no_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    script = fake_vllm(tmp_path)
    monkeypatch.setattr(vllm_launcher.shutil, "which", lambda name: str(script))
    monkeypatch.setenv("TEST_HF_TOKEN", TOKEN)
    receipt = tmp_path / "receipt"
    model = qwen_over_ray(env={"HF_TOKEN": "env:TEST_HF_TOKEN", "RECEIPT": str(receipt)})
    built = default_registry().build("qwen", model, context(tmp_path))
    assert "8 GPUs of a Ray cluster, 4 of them on this node" in caplog.text

    port, log_path = free_port(), tmp_path / "logs" / "qwen.log"
    process = EngineProcess(built.launcher.command("127.0.0.1", port), "127.0.0.1", port, log_path)
    await process.start()
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(EngineStartError) as failed:
            await process.wait_ready(client, 30)
    assert receipt.read_text() == TOKEN  # the process got it, through its environment
    engine_log = log_path.read_text()
    assert "--distributed-executor-backend ray" in engine_log  # the command line is recorded
    assert "no Ray cluster at 10.0.0.1:6379" in engine_log
    for shown in (engine_log, caplog.text, str(failed.value), repr(built), repr(model)):
        assert TOKEN not in shown


def test_a_missing_credential_is_a_config_error_naming_the_key_not_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm_launcher.shutil, "which", lambda name: "/usr/bin/vllm")
    monkeypatch.delenv("TEST_HF_TOKEN", raising=False)
    model = qwen_over_ray(env={"HF_TOKEN": "env:TEST_HF_TOKEN"})
    with pytest.raises(ConfigError, match=r"models\.qwen\.vllm\.env\.HF_TOKEN: .*TEST_HF_TOKEN"):
        default_registry().build("qwen", model, context(tmp_path))


def test_a_model_larger_than_the_node_needs_ray_and_a_layout_across_nodes_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(vllm_launcher.shutil, "which", lambda name: "/usr/bin/vllm")
    vllm: dict[str, object] = {"tensor_parallel_size": 8}
    model = ModelSettings.model_validate({"model": "org/big", "engine": "vllm", "vllm": vllm})
    with pytest.raises(ConfigError, match="8 GPUs, and this node has 4"):
        default_registry().build("big", model, context(tmp_path))
    vllm["distributed_executor_backend"] = "ray"
    model = ModelSettings.model_validate({"model": "org/big", "engine": "vllm", "vllm": vllm})
    with caplog.at_level(logging.WARNING):
        default_registry().build("big", model, context(tmp_path))
    assert "every layer waits on the network between nodes" in caplog.text


def test_doctor_says_what_a_ray_model_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm_launcher.shutil, "which", lambda name: "/usr/bin/vllm")
    monkeypatch.setattr(vllm_engine, "vllm_version", lambda: "0.11.0")
    monkeypatch.setattr(vllm_engine, "ray_version", lambda: None)
    settings = context(tmp_path, {"models": {"qwen": qwen_over_ray()}}).settings
    row = vllm_engine.status("vllm", settings, FOUR_GPUS)
    assert not row.available
    assert "qwen use distributed_executor_backend: ray" in row.detail
    assert "pip install 'ray[default]'" in row.detail
    # Without a Ray model, vLLM on one node is fine.
    alone = vllm_engine.status("vllm", context(tmp_path).settings, FOUR_GPUS)
    assert alone.available and "one node" in alone.detail
    monkeypatch.setattr(vllm_engine, "ray_version", lambda: "2.49.0")
    row = vllm_engine.status("vllm", settings, FOUR_GPUS)
    assert row.available and "Ray 2.49.0" in row.detail
    # Without vLLM at all, the row says how to install it.
    monkeypatch.setattr(vllm_launcher.shutil, "which", lambda name: None)
    monkeypatch.setattr(vllm_engine, "vllm_version", lambda: None)
    missing = vllm_engine.status("vllm", settings, FOUR_GPUS)
    assert not missing.available and missing.detail == INSTALL_HINT
