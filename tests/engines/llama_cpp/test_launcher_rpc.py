"""A model split over RPC workers: the `rpc` entry validated, and passed to llama-server as
--rpc from the settings through the catalogue."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from hearth.config import EngineSettings
from hearth.deployments.build import build_catalogue
from hearth.engines.llama_cpp.launcher import LlamaServerLauncher
from hearth.engines.ports import free_port
from hearth.engines.process import EngineProcess
from hearth.errors import ConfigError, EngineStartError
from hearth.settings_layers import load_settings


def argv(rpc: tuple[str, ...], **engine: object) -> list[str]:
    launcher = LlamaServerLauncher(
        binary=Path("/bin/llama-server"),
        model_path=Path("/m.gguf"),
        alias="big",
        settings=EngineSettings.model_validate(engine),
        rpc=rpc,
    )
    return launcher.command("127.0.0.1", 1).argv


def test_workers_are_one_rpc_flag_and_layers_follow_gpu_layers() -> None:
    assert "--rpc" not in argv(())
    two = argv(("10.0.0.2:50052", "worker-b:50053"))
    assert two[two.index("--rpc") + 1] == "10.0.0.2:50052,worker-b:50053"
    # Unset: llama.cpp's own "auto" puts every layer that fits on the workers.
    assert "--gpu-layers" not in two
    half = argv(("10.0.0.2:50052",), gpu_layers=9)
    assert half[half.index("--gpu-layers") + 1] == "9"


def catalogue(tmp_path: Path, entry: str):  # type: ignore[no-untyped-def]
    config = tmp_path / "hearth.yaml"
    config.write_text(f"models:\n  big:\n    model: gemma-3-270m\n{entry}")
    settings = load_settings(config, environ={})
    return build_catalogue(settings, tmp_path / "llama-server", tmp_path / "bundled.gguf")


def test_a_model_entry_starts_its_engine_with_its_workers(tmp_path: Path) -> None:
    built = catalogue(tmp_path, '    rpc: ["10.0.0.2:50052", " 10.0.0.3:50052"]\n')
    command = built.local("big").launcher.command("127.0.0.1", 1).argv
    assert command[command.index("--rpc") + 1] == "10.0.0.2:50052,10.0.0.3:50052"
    plain = built.local("gemma-3-270m").launcher.command("127.0.0.1", 1).argv
    assert "--rpc" not in plain


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tcp://10.0.0.2:50052", "no scheme"),
        ("10.0.0.2", "is not host:port"),
        ("[::1]:50052", "IPv6"),
        ("10.0.0.2:0", "1 to 65535"),
        ("10.0.0.2:65536", "1 to 65535"),
    ],
)
def test_a_bad_worker_address_is_named(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"models\.big\.rpc\.0.*{message}"):
        catalogue(tmp_path, f'    rpc: ["{value}"]\n')


def test_only_llama_cpp_takes_workers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\.big\.rpc.*only the llama\.cpp engine"):
        catalogue(tmp_path, '    engine: vllm\n    rpc: ["10.0.0.2:50052"]\n')


async def test_a_worker_that_does_not_answer_is_named_in_the_start_error(
    llama_server_binary: Path, bundled_model_dir: Path, tmp_path: Path
) -> None:
    # The real llama-server aborts with a backtrace when a worker is down; the error must say
    # which worker and what to do, first, where clients and `hearth ps` see it.
    closed = free_port()
    model = next(bundled_model_dir.glob("gemma*.gguf"))
    launcher = LlamaServerLauncher(
        binary=llama_server_binary,
        model_path=model,
        alias="big",
        settings=EngineSettings(),
        rpc=(f"127.0.0.1:{closed}",),
    )
    port = free_port()
    engine = EngineProcess(launcher.command("127.0.0.1", port), "127.0.0.1", port, tmp_path / "l")
    await engine.start()
    try:
        async with httpx.AsyncClient() as probe:
            with pytest.raises(EngineStartError) as raised:
                await asyncio.wait_for(engine.wait_ready(probe, timeout=120), 110)
    finally:
        await engine.stop(grace=5)
    first_line = str(raised.value).splitlines()[0]
    assert first_line.startswith(
        f"an RPC worker did not answer (Failed to connect to 127.0.0.1:{closed}): start it with "
        "`hearth rpc-worker`"
    )
