"""Saving and restoring llama-server's slots: which slots, in which order, within which bounds,
for which model; against the real engine with the bundled model."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from conftest import link_bundled_model
from hearth.config import EngineSettings, Settings
from hearth.deployments.build import build_catalogue
from hearth.engines.llama_cpp.launcher import LlamaServerLauncher, bundled_template
from hearth.engines.llama_cpp.slot_cache import MIN_TOKENS, SlotCache, _hottest
from hearth.engines.prompt_cache import MANIFEST, Manifest, PromptCache
from hearth.engines.supervisor import EngineSupervisor, SupervisorPolicy
from hearth.models.bundled import BUNDLED_MODEL_NAME, bundled_model_path
from hearth.models.bundled_embeddings import EMBEDDINGS_MODEL_NAME

SETTINGS = EngineSettings(parallel=2, ctx_size=2048)


def test_the_most_recently_used_idle_slots_with_enough_tokens_come_first() -> None:
    slots = [
        {"id": 0, "id_task": 7, "is_processing": False, "n_prompt_tokens": 500},
        {"id": 1, "id_task": 12, "is_processing": False, "n_prompt_tokens": 80},
        {"id": 2, "id_task": 30, "is_processing": True, "n_prompt_tokens": 900},  # busy
        {"id": 3, "id_task": 40, "is_processing": False, "n_prompt_tokens": MIN_TOKENS - 1},
        {"id": 4, "is_processing": False},  # never used (or restored and untouched)
        {"id": 5, "id_task": 9, "is_processing": False, "n_prompt_tokens": 2000},
    ]
    assert _hottest(slots) == [1, 5, 0]


def test_identity_changes_with_the_model_file_and_the_kv_layout(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    cache = SlotCache(PromptCache(tmp_path / "pc", 1), "m", model, None, SETTINGS)
    before = cache.identity()
    assert cache.identity() == before
    assert SlotCache(cache.cache, "m", model, None, EngineSettings(parallel=3)).identity() != before
    os.utime(model, ns=(1, 1))
    assert cache.identity() != before


async def test_a_restore_waits_for_a_save_into_the_same_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []

    async def save(self: SlotCache, name: str, base_url: str) -> None:
        order.append(f"save {name} {base_url}")
        await asyncio.sleep(0.2)
        order.append(f"saved {name}")

    async def restore(self: SlotCache, name: str, base_url: str) -> None:
        order.append(f"restore {name} {base_url}")

    monkeypatch.setattr(SlotCache, "_save", save)
    monkeypatch.setattr(SlotCache, "_restore", restore)
    cache = SlotCache(PromptCache(tmp_path, 1), "m", tmp_path / "m.gguf", None, SETTINGS)
    # The old engine of `m` saving while its successor, just started, restores; `m#1` is free.
    saving = asyncio.create_task(cache.before_stop("m", "old"))
    await asyncio.sleep(0.05)
    await asyncio.gather(cache.after_ready("m", "new"), cache.after_ready("m#1", "other"))
    await saving
    assert order == ["save m old", "restore m#1 other", "saved m", "restore m new"]


def test_only_chat_models_get_it_and_zero_turns_it_off(
    tmp_path: Path, bundled_model_dir: Path, llama_server_binary: Path
) -> None:
    link_bundled_model(bundled_model_dir, tmp_path)

    def slot_cache(max_bytes: int) -> dict[str, SlotCache | None]:
        settings = Settings(data_dir=tmp_path, prompt_cache_max=max_bytes)  # type: ignore[arg-type]
        catalogue = build_catalogue(
            settings, llama_server_binary, bundled_model_path(settings.models_dir)
        )
        found = {}
        for name in (BUNDLED_MODEL_NAME, EMBEDDINGS_MODEL_NAME):
            launcher = catalogue.local(name).launcher
            assert isinstance(launcher, LlamaServerLauncher)
            found[name] = launcher.slot_cache
        return found

    on = slot_cache(10**9)
    chat = on[BUNDLED_MODEL_NAME]
    assert chat is not None and chat.cache.max_bytes == 10**9
    assert chat.cache.root == tmp_path / "prompt-cache"
    assert on[EMBEDDINGS_MODEL_NAME] is None
    assert slot_cache(0) == {BUNDLED_MODEL_NAME: None, EMBEDDINGS_MODEL_NAME: None}


# -- Against the real engine ---------------------------------------------------------------------

Engine = Callable[[PromptCache], EngineSupervisor]


@pytest.fixture
async def engine(
    llama_server_binary: Path, bundled_model_dir: Path, tmp_path: Path
) -> AsyncIterator[Engine]:
    """`engine(cache)`: the bundled model on llama-server with the slot cache, started."""
    started: list[EngineSupervisor] = []

    def start(cache: PromptCache) -> EngineSupervisor:
        model = bundled_model_path(bundled_model_dir)
        launcher = LlamaServerLauncher(
            binary=llama_server_binary,
            model_path=model,
            alias="gemma",
            settings=SETTINGS,
            chat_template_file=bundled_template("gemma3"),
            slot_cache=SlotCache(cache, "gemma", model, llama_server_binary, SETTINGS),
        )
        policy = SupervisorPolicy(startup_timeout=120, hook_timeout=30)
        supervisor = EngineSupervisor("gemma", launcher, tmp_path / "engine.log", policy)
        started.append(supervisor)
        supervisor.start()
        return supervisor

    yield start
    for supervisor in started:
        await supervisor.stop()


async def complete(supervisor: EngineSupervisor, prompt: str) -> dict[str, object]:
    url = await supervisor.endpoint()
    async with httpx.AsyncClient(trust_env=False, timeout=120) as client:
        answer = await client.post(
            url + "/completion", json={"prompt": prompt, "n_predict": 2, "temperature": 0}
        )
    answer.raise_for_status()
    return answer.json()  # type: ignore[no-any-return]


def prompt(topic: str) -> str:
    return " ".join(f"{topic} fact {i} is that it has {i * 3} parts." for i in range(1, 10))


async def test_saved_slots_come_back_hottest_first_and_untouched_ones_are_kept(
    engine: Engine, tmp_path: Path
) -> None:
    cache = PromptCache(tmp_path / "pc", 10**9)
    folder = cache.folder("gemma", "gemma")
    first = engine(cache)
    await complete(first, prompt("Ocean"))
    await complete(first, prompt("Forest"))  # the other slot: Ocean's is still held
    await first.stop()

    manifest = cache.read(folder)
    assert manifest is not None
    assert len(manifest.slots) == 2
    forest, ocean = manifest.slots  # the most recently used first
    assert forest.tokens >= MIN_TOKENS and ocean.tokens >= MIN_TOKENS
    ocean_file = (folder / ocean.file).read_bytes()

    second = engine(cache)
    answer = await complete(second, prompt("Forest") + " And more.")
    assert answer["timings"]["cache_n"] >= forest.tokens - 4  # type: ignore[index]
    await second.stop()

    # Forest's slot was saved again; Ocean's, restored and never used since, kept as it was.
    again = cache.read(folder)
    assert again is not None
    assert [s.slot for s in again.slots] == [forest.slot, ocean.slot]
    assert again.slots[0].tokens > forest.tokens
    assert (folder / ocean.file).read_bytes() == ocean_file


async def test_a_stale_save_is_never_restored_and_the_bound_is_kept(
    engine: Engine, tmp_path: Path
) -> None:
    cache = PromptCache(tmp_path / "pc", 10**9)
    folder = cache.folder("gemma", "gemma")
    first = engine(cache)
    await complete(first, prompt("Canyon"))
    await first.stop()
    manifest = cache.read(folder)
    assert manifest is not None and len(manifest.slots) == 1
    # As if the model file had been replaced since.
    stale = {**manifest.identity, "model": {**manifest.identity["model"], "size": 1}}
    cache.write(folder, Manifest(stale, manifest.saved_at, manifest.slots))

    second = engine(cache)
    answer = await complete(second, prompt("Canyon"))
    assert answer["timings"]["cache_n"] == 0  # type: ignore[index]
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST]

    cache.max_bytes = manifest.slots[0].bytes // 2  # no room for that slot
    await second.stop()
    bounded = cache.read(folder)
    assert bounded is not None and bounded.slots == ()
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST]
