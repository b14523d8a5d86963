"""The engine registry: names, lookups, the automatic choice, default slots, engines added by a
test registry or by an installed package's entry point."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hearth.config import ModelSettings, Settings
from hearth.deployments.build import build_catalogue
from hearth.engines import gpu
from hearth.engines.base import Capabilities, EngineCommand
from hearth.engines.gpu import GPU, Accelerators
from hearth.engines.mlx import engine as mlx_engine
from hearth.engines.registry import BUILT_IN, EngineRegistry, default_registry
from hearth.engines.spec import (
    FORMAT,
    BuiltEngine,
    EngineContext,
    EngineSpec,
    ModelEntry,
)
from hearth.engines.status import EngineStatus
from hearth.engines.transformers.launcher import TransformersLauncher
from hearth.engines.vllm import engine as vllm_engine
from hearth.errors import ConfigError
from hearth.models.store import ModelStore
from hearth.settings_layers import load_settings
from support.gguf_files import write_gguf
from support.hf_models import minilm_dir

CPU = Accelerators("none")
NVIDIA = Accelerators("nvidia", (GPU(0, "H100", 80 * 2**30, 79 * 2**30),))
METAL = Accelerators("metal", (GPU(0, "Apple Metal GPU", 2**34, 2**34),))
KNOWN = ["command", "llama.cpp", "mlx", "mlx-vlm", "transformers", "vllm"]


def context_for(tmp_path: Path, accelerators: Accelerators = CPU) -> EngineContext:
    settings = load_settings(None, environ={})
    store = ModelStore(tmp_path / "models")
    return EngineContext(
        settings, accelerators, store, tmp_path / "bundled.gguf", tmp_path / "llama-server"
    )


def choose(tmp_path: Path, model: ModelSettings, accelerators: Accelerators = CPU) -> str:
    return default_registry().choose("a", model, context_for(tmp_path, accelerators))


def test_the_built_in_engines_are_known_by_name_with_their_default_slots() -> None:
    registry = default_registry(plugins=False)
    assert registry.names() == KNOWN
    assert registry.get("mlx-vlm") is registry.get("mlx")
    slots = {name: registry.get(name).default_slots for name in registry.names()}
    assert slots == {
        "command": 4,
        "llama.cpp": 8,
        "mlx": 4,
        "mlx-vlm": 4,
        "transformers": 4,
        "vllm": 64,
    }


def test_an_unknown_engine_is_a_config_error_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        choose(tmp_path, ModelSettings(model="gemma-3-270m", engine="tensorrt"))
    assert str(caught.value) == (
        "models.a.engine: 'tensorrt' is not an engine; known: " + ", ".join(KNOWN)
    )


def test_the_format_picks_the_engine_unless_the_entry_names_one(tmp_path: Path) -> None:
    folder = str(minilm_dir())
    assert choose(tmp_path, ModelSettings(model="x.gguf"), NVIDIA) == "llama.cpp"
    assert choose(tmp_path, ModelSettings(model="gemma-3-270m")) == "llama.cpp"
    assert choose(tmp_path, ModelSettings(model=folder)) == "transformers"
    assert choose(tmp_path, ModelSettings(model="org/repo", engine="vllm")) == "vllm"
    assert choose(tmp_path, ModelSettings(model="x.gguf", command=["s", "{port}"])) == "command"
    with pytest.raises(ConfigError, match="nor a Hugging Face model folder"):
        choose(tmp_path, ModelSettings(model=str(tmp_path)))


def test_a_stored_model_is_served_by_llama_cpp(tmp_path: Path) -> None:
    context = context_for(tmp_path)
    context.store.import_file(write_gguf(tmp_path / "tiny.gguf"))
    assert default_registry().choose("a", ModelSettings(model="tiny"), context) == "llama.cpp"


def test_a_folder_prefers_vllm_on_an_nvidia_gpu_when_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ModelSettings(model=str(minilm_dir()))
    monkeypatch.setattr(vllm_engine, "vllm_version", lambda: "0.11.0")
    assert choose(tmp_path, model, NVIDIA) == "vllm"
    assert choose(tmp_path, model, CPU) == "transformers"
    assert choose(tmp_path, ModelSettings(model="x.gguf"), NVIDIA) == "llama.cpp"
    monkeypatch.setattr(vllm_engine, "vllm_version", lambda: None)
    assert choose(tmp_path, model, NVIDIA) == "transformers"


def test_a_folder_prefers_mlx_on_apple_silicon_when_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ModelSettings(model=str(minilm_dir()))
    monkeypatch.setattr(mlx_engine, "_installed", lambda kind: kind == "mlx")
    assert choose(tmp_path, model, METAL) == "mlx"
    assert choose(tmp_path, model, NVIDIA) == "transformers"
    monkeypatch.setattr(mlx_engine, "_installed", lambda kind: False)
    assert choose(tmp_path, model, METAL) == "transformers"


def test_engines_this_machine_cannot_run_are_config_errors_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu, "is_apple_silicon", lambda: False)
    registry, context = default_registry(), context_for(tmp_path)
    for engine, message in (
        ("vllm", "vllm"),
        ("mlx", "Apple silicon"),
        ("mlx-vlm", "Apple silicon"),
    ):
        model = ModelSettings(model="org/repo", engine=engine)
        with pytest.raises(ConfigError, match=f"models.x: .*{message}"):
            registry.build("x", model, context)
    with pytest.raises(ConfigError, match="serves a Hugging Face model folder"):
        registry.build("x", ModelSettings(model="org/repo", engine="transformers"), context)


def test_a_folder_is_built_with_its_task_and_slots(tmp_path: Path) -> None:
    registry, context = default_registry(), context_for(tmp_path)
    built = registry.build("emb", ModelSettings(model=str(minilm_dir())), context)
    assert isinstance(built.launcher, TransformersLauncher)
    assert built.launcher.capabilities.names() == ["embeddings"]
    assert built.slots == 4
    assert built.memory_bytes > 90_000_000
    rerank = ModelSettings(model=str(minilm_dir()), task="rerank", parallel=2)
    built = registry.build("rr", rerank, context)
    assert built.launcher.capabilities.names() == ["rerank"]
    assert built.slots == 2


def test_capability_names_are_what_routing_checks_and_listings_show() -> None:
    everything = Capabilities(
        chat=True, completion=True, embeddings=True, rerank=True, tools=True, vision=True,
        token_counting=True,
    )  # fmt: skip
    assert everything.names() == ["chat", "completion", "embeddings", "rerank", "tools", "vision"]
    assert Capabilities.for_task("rerank").names() == ["rerank"]
    assert Capabilities.for_task("chat", tools=True).names() == ["chat", "completion", "tools"]


def test_doctor_rows_come_from_the_registry() -> None:
    rows = default_registry().statuses(load_settings(None, environ={}), CPU)
    assert [row.engine for row in rows] == ["llama.cpp", "transformers", "vllm", "mlx", "mlx-vlm"]
    assert [row.required for row in rows] == [True, False, False, False, False]


# An engine of the tests' own: serves `*.echo` entries and any entry naming it.


@dataclass(frozen=True)
class EchoLauncher:
    model: str
    kind: str = "echo"
    capabilities: Capabilities = field(default=Capabilities(chat=True))

    @property
    def model_file(self) -> None:
        return None

    def command(self, host: str, port: int) -> EngineCommand:
        return EngineCommand(argv=["echo-server", "--port", str(port), self.model])

    def prepare_request(self, body: dict[str, Any]) -> None:
        return None


def _build_echo(entry: ModelEntry, context: EngineContext) -> BuiltEngine:
    return BuiltEngine(EchoLauncher(entry.settings.model), 123, entry.slots(ECHO.default_slots))


def _claim_echo(model: ModelSettings, context: EngineContext) -> int | None:
    return FORMAT if model.model.endswith(".echo") else None


def _echo_status(name: str, settings: Settings, accelerators: Accelerators) -> EngineStatus:
    return EngineStatus(name, True, "1.0", "always there")


ECHO = EngineSpec(
    names=("echo",), build=_build_echo, default_slots=3, claim=_claim_echo, status=_echo_status
)


def test_an_engine_registered_in_a_registry_is_built_by_the_catalogue(tmp_path: Path) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text(
        "models:\n  named:\n    model: anything\n    engine: echo\n"
        "  claimed:\n    model: voice.echo\n    parallel: 7\n"
    )
    settings = load_settings(config, environ={})
    registry = EngineRegistry([*BUILT_IN, ECHO])
    catalogue = build_catalogue(settings, None, tmp_path / "bundled.gguf", registry)
    named, claimed = catalogue.local("named"), catalogue.local("claimed")
    assert isinstance(named.launcher, EchoLauncher)
    assert isinstance(claimed.launcher, EchoLauncher)
    assert (named.slots, named.memory_bytes) == (3, 123)
    assert claimed.slots == 7
    assert claimed.launcher.command("h", 5).argv == ["echo-server", "--port", "5", "voice.echo"]
    assert catalogue.local("gemma-3-270m").launcher.kind == "llama.cpp"
    assert "echo" in registry.names()
    assert [row.engine for row in registry.statuses(settings, CPU)][-1] == "echo"
    with pytest.raises(ConfigError, match=r"models\.named\.engine: 'echo' is not an engine"):
        build_catalogue(settings, None, tmp_path / "bundled.gguf")


def test_a_name_is_registered_once() -> None:
    registry = EngineRegistry([ECHO])
    with pytest.raises(ValueError, match="echo is already registered"):
        registry.register(ECHO)


PLUGIN = """
from hearth.engines.spec import EngineSpec
from hearth.engines.registry import BUILT_IN

ENGINE = EngineSpec(names=("plugged",), build=BUILT_IN[0].build, default_slots=2)
NOT_A_SPEC = 42
"""


def test_installed_packages_add_engines_through_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = "hearth_test_engine_plugin"
    (tmp_path / f"{module}.py").write_text(PLUGIN)
    dist_info = tmp_path / "hearth_test_engine_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hearth-test-engine-plugin\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[hearth.engines]\n"
        f"plugged = {module}:ENGINE\n"
        f"wrong = {module}:NOT_A_SPEC\n"
        "broken = hearth_no_such_module:ENGINE\n"
        f"again = {module}:ENGINE\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    with caplog.at_level(logging.WARNING, "hearth.engines.registry"):
        registry = default_registry()
    assert registry.names() == sorted([*KNOWN, "plugged"])
    assert registry.get("plugged").default_slots == 2
    warnings = caplog.text
    assert "wrong" in warnings and "not an EngineSpec" in warnings
    assert "broken" in warnings and "cannot be loaded" in warnings
    assert "plugged is already registered" in warnings
    assert default_registry(plugins=False).names() == KNOWN
    monkeypatch.delitem(sys.modules, module, raising=False)
