"""The mlx_lm.server and MLX-VLM server command lines, and the errors off Apple silicon."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from hearth.engines.gpu import is_apple_silicon
from hearth.engines.mlx import launcher as mlx_launcher
from hearth.engines.mlx.launcher import MLXLauncher, require_mlx
from support.engine_checks import answers_a_completion
from support.hf_models import write_tiny_chat_model


@pytest.mark.parametrize(
    ("kind", "module"), [("mlx", "mlx_lm.server"), ("mlx-vlm", "mlx_vlm.server")]
)
def test_command_runs_the_server_module(kind: str, module: str) -> None:
    launcher = MLXLauncher(
        "mlx-community/Qwen2.5-0.5B-Instruct-4bit", "qwen", kind=kind,
        adapter_path="/adapters/a", extra_args=["--trust-remote-code"],
    )  # fmt: skip
    command = launcher.command("127.0.0.1", 9001)
    argv = command.argv
    assert argv[:3] == [sys.executable, "-m", module]
    assert argv[argv.index("--model") + 1] == "mlx-community/Qwen2.5-0.5B-Instruct-4bit"
    assert argv[argv.index("--port") + 1] == "9001"
    assert argv[argv.index("--adapter-path") + 1] == "/adapters/a"
    assert argv[-1] == "--trust-remote-code"
    assert command.health_path == "/health"
    body = {"model": "qwen", "messages": []}
    launcher.prepare_request(body)
    assert body["model"] == "mlx-community/Qwen2.5-0.5B-Instruct-4bit"


def test_off_apple_silicon_the_error_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlx_launcher, "is_apple_silicon", lambda: False)
    with pytest.raises(mlx_launcher.SetupError, match="needs a Mac with Apple silicon"):
        require_mlx("mlx")


def test_a_missing_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlx_launcher, "is_apple_silicon", lambda: True)
    monkeypatch.setattr(mlx_launcher.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(mlx_launcher.SetupError, match="pip install mlx-vlm"):
        require_mlx("mlx-vlm")
    with pytest.raises(mlx_launcher.SetupError, match="pip install mlx-lm"):
        require_mlx("mlx")


@pytest.mark.skipif(
    not is_apple_silicon() or importlib.util.find_spec("mlx_lm") is None,
    reason="needs a Mac with Apple silicon and mlx-lm; this machine is neither",
)
async def test_mlx_serves_a_tiny_model_for_real(tmp_path: Path) -> None:
    model = write_tiny_chat_model(tmp_path / "tiny-chat")
    await answers_a_completion(MLXLauncher(str(model), "tiny"), tmp_path / "mlx.log")
