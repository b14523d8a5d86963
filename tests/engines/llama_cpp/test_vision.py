"""Vision models on llama.cpp: a model with a projector (stored with it, or the entry's `mmproj`)
is started with `--mmproj` and has the `vision` capability; the real llama-server, started from
the launcher's own command line, then reads an image (its prompt grows by the image's tokens)."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hearth.config import ModelSettings
from hearth.engines.gpu import Accelerators
from hearth.engines.llama_cpp.launcher import LlamaServerLauncher
from hearth.engines.registry import default_registry
from hearth.engines.spec import BuiltEngine, EngineContext
from hearth.errors import ConfigError, InvalidRequest
from hearth.models.store import ModelStore
from hearth.settings_layers import load_settings
from support.ports import free_port
from support.vision_files import TinyVLM, image_data_url, tiny_vlm


@pytest.fixture(scope="session")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> TinyVLM:
    return tiny_vlm(tmp_path_factory)


def context_for(tmp_path: Path, binary: Path) -> EngineContext:
    settings = load_settings(None, environ={})
    store = ModelStore(tmp_path / "models")
    return EngineContext(settings, Accelerators("none"), store, tmp_path / "bundled.gguf", binary)


def build(context: EngineContext, model: ModelSettings, name: str = "seer") -> BuiltEngine:
    return default_registry().build(name, model, context)


def launcher_of(built: BuiltEngine) -> LlamaServerLauncher:
    assert isinstance(built.launcher, LlamaServerLauncher)
    return built.launcher


def test_a_stored_projector_starts_the_model_with_mmproj(tmp_path: Path, vlm: TinyVLM) -> None:
    context = context_for(tmp_path, tmp_path / "llama-server")
    stored = context.store.import_file(vlm.text, name="seer", projector=vlm.mmproj)
    context.store.import_file(vlm.text, name="blind")
    seer = launcher_of(build(context, ModelSettings(model="seer")))
    assert seer.capabilities.vision and seer.capabilities.chat
    argv = seer.command("127.0.0.1", 8080).argv
    assert argv[argv.index("--mmproj") + 1] == str(stored.projector)
    blind = build(context, ModelSettings(model="blind"), "blind")
    assert not blind.launcher.capabilities.vision
    assert "--mmproj" not in blind.launcher.command("127.0.0.1", 8080).argv
    # The projector's memory counts.
    seer_memory = build(context, ModelSettings(model="seer")).memory_bytes
    assert seer_memory - blind.memory_bytes == vlm.mmproj.stat().st_size
    assert "vision" in seer.capabilities.names()


def test_the_entrys_mmproj_setting(tmp_path: Path, vlm: TinyVLM) -> None:
    context = context_for(tmp_path, tmp_path / "llama-server")
    built = build(context, ModelSettings(model=str(vlm.text), mmproj=str(vlm.mmproj)))
    argv = built.launcher.command("127.0.0.1", 8080).argv
    assert argv[argv.index("--mmproj") + 1] == str(vlm.mmproj)
    assert built.launcher.capabilities.vision
    for wrong, message in (
        (str(tmp_path / "nowhere.gguf"), "models.seer.mmproj: .* is not a file"),
        (str(vlm.text), "models.seer.mmproj: .*is not a multimodal projector"),
    ):
        with pytest.raises(ConfigError, match=message):
            build(context, ModelSettings(model=str(vlm.text), mmproj=wrong))
    with pytest.raises(ConfigError, match=r"models\.seer\.mmproj: a projector gives a chat model"):
        build(
            context, ModelSettings(model=str(vlm.text), mmproj=str(vlm.mmproj), task="embeddings")
        )


def test_a_stored_projector_that_went_missing_leaves_a_text_model(
    tmp_path: Path, vlm: TinyVLM, caplog: pytest.LogCaptureFixture
) -> None:
    context = context_for(tmp_path, tmp_path / "llama-server")
    stored = context.store.import_file(vlm.text, name="seer", projector=vlm.mmproj)
    assert stored.projector is not None
    stored.projector.unlink()
    with caplog.at_level(logging.WARNING):
        built = build(context, ModelSettings(model="seer"))
    assert not built.launcher.capabilities.vision
    assert "--mmproj" not in built.launcher.command("127.0.0.1", 8080).argv
    assert "its projector is left out" in caplog.text


@pytest.fixture
def engine(
    tmp_path: Path, vlm: TinyVLM, llama_server_binary: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """llama-server started with the launcher's command for the model with its projector."""
    context = context_for(tmp_path, llama_server_binary)
    context.store.import_file(vlm.text, name="seer", projector=vlm.mmproj)
    model = ModelSettings(model="seer", ctx_size=2048, parallel=1, threads=1)
    port = free_port()
    argv = build(context, model).launcher.command("127.0.0.1", port).argv
    log = (tmp_path / "engine.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "engine.log").read_text()
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    try:
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_the_engine_reads_the_image(engine: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, _ = engine

    def prompt_tokens(content: object) -> int:
        body = {"messages": [{"role": "user", "content": content}], "max_tokens": 2}
        answer = httpx.post(base + "/v1/chat/completions", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["usage"]["prompt_tokens"])

    text = prompt_tokens([{"type": "text", "text": "What is it?"}])
    image = {"type": "image_url", "image_url": {"url": image_data_url()}}
    one = prompt_tokens([{"type": "text", "text": "What is it?"}, image])
    two = prompt_tokens([{"type": "text", "text": "What is it?"}, image, image])
    assert one > text + 16  # the projector's 16 image tokens, and the image markers
    assert two - one == one - text  # each image adds the same


def test_the_engine_is_never_handed_an_image_to_fetch(tmp_path: Path, vlm: TinyVLM) -> None:
    """llama-server GETs an http(s) image URL itself, past every check of Hearth's fetcher: by
    the time a body reaches it, every image must be inline."""
    context = context_for(tmp_path, tmp_path / "llama-server")
    launcher = build(context, ModelSettings(model=str(vlm.text), mmproj=str(vlm.mmproj))).launcher
    inline = {"type": "image_url", "image_url": {"url": image_data_url()}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "?"}, inline]}]}
    launcher.prepare_request(body)
    assert body["messages"][0]["content"][1] == inline
    for url in ("http://169.254.169.254/latest/meta-data", "file:///etc/passwd", None):
        fetched = {"type": "image_url", "image_url": {"url": url}}
        body = {
            "messages": [{"role": "user", "content": "?"}, {"role": "user", "content": [fetched]}]
        }
        with pytest.raises(InvalidRequest) as caught:
            launcher.prepare_request(body)
        assert caught.value.param == "messages[1].content[0].image_url.url"
