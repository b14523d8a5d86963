"""The prompt-cache folder: path-safe names, manifests, the size bound and removal with a model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from hearth.engines.prompt_cache import (
    LEFTOVER_AFTER_S,
    MANIFEST,
    Manifest,
    PromptCache,
    SavedSlot,
    path_component,
    slot_file,
)

IDENTITY = {"model": {"path": "/m.gguf", "size": 1, "mtime_ns": 2}, "parallel": 4}


def saved(folder: Path, cache: PromptCache, saved_at: float, sizes: dict[int, int]) -> None:
    """Write slot files of the given sizes (hottest first) and their manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    slots = []
    for slot, size in sizes.items():
        (folder / slot_file(slot)).write_bytes(b"k" * size)
        slots.append(SavedSlot(slot, slot_file(slot), tokens=size // 10, bytes=size))
    cache.write(folder, Manifest(IDENTITY, saved_at, tuple(slots)))


@pytest.mark.parametrize(
    "name",
    ["..", ".", "a/../../b", "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", "model#2", "x" * 400, ""],
)
def test_any_name_becomes_one_component_inside_the_root(tmp_path: Path, name: str) -> None:
    cache = PromptCache(tmp_path / "prompt-cache", 100)
    folder = cache.folder(name, f"{name}#1")
    assert folder.parent.parent == cache.root
    assert folder.resolve().is_relative_to(cache.root.resolve())
    assert len(path_component(name)) <= 120
    assert path_component(name) not in (".", "..")


def test_distinct_names_get_distinct_folders() -> None:
    names = ["a/b", "a-b", "a%2Fb", "a_b", "x" * 300, "x" * 301, "A", "a"]
    assert len({path_component(n) for n in names}) == len(names)


def test_manifest_round_trip_and_unlisted_files_are_deleted(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path, 10_000)
    folder = cache.folder("m", "m")
    saved(folder, cache, 100.0, {3: 50, 1: 40})
    (folder / "slot-7.bin").write_bytes(b"half-written by an engine that was then stopped")

    cache.write(folder, cache.read(folder))  # type: ignore[arg-type]

    manifest = cache.read(folder)
    assert manifest is not None
    assert manifest.identity == IDENTITY
    assert [s.slot for s in manifest.slots] == [3, 1]  # hottest first, as written
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, "slot-1.bin", "slot-3.bin"]


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps({"version": 99, "identity": {}, "saved_at": 0, "slots": []}),
        # A file name that is not the slot's own: never handed to the engine.
        json.dumps(
            {
                "version": 1,
                "identity": {},
                "saved_at": 0,
                "slots": [{"slot": 0, "file": "../../etc/passwd", "tokens": 1, "bytes": 1}],
            }
        ),
    ],
)
def test_an_unreadable_manifest_empties_its_folder(tmp_path: Path, text: str) -> None:
    cache = PromptCache(tmp_path, 10_000)
    folder = cache.folder("m", "m")
    saved(folder, cache, 1.0, {0: 10})
    (folder / MANIFEST).write_text(text)

    assert cache.read(folder) is None
    assert folder.is_dir() and list(folder.iterdir()) == []  # the folder itself stays


def test_trim_deletes_the_oldest_save_first_and_the_coldest_slot_within_it(
    tmp_path: Path,
) -> None:
    cache = PromptCache(tmp_path, 1000)
    old, new = cache.folder("old-model", "old-model"), cache.folder("new-model", "new-model#1")
    saved(old, cache, 100.0, {0: 300, 1: 300})  # slot 0 is the hotter one
    saved(new, cache, 200.0, {5: 300, 6: 300})  # hottest first: 5, then 6

    deleted = cache.trim()

    assert deleted == 300 and cache.size() - _manifests(cache) <= 1000
    assert [s.slot for s in cache.read(old).slots] == [0]  # type: ignore[union-attr]
    assert not (old / "slot-1.bin").exists()
    assert [s.slot for s in cache.read(new).slots] == [5, 6]  # type: ignore[union-attr]

    cache.max_bytes = 350
    cache.trim()
    assert cache.read(old).slots == ()  # type: ignore[union-attr]
    assert [s.slot for s in cache.read(new).slots] == [5]  # type: ignore[union-attr]
    assert old.is_dir()  # a running engine may still save into it


def test_trim_deletes_old_leftovers_but_not_a_file_being_written(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path, 10_000)
    folder = cache.folder("m", "m")
    saved(folder, cache, time.time(), {0: 10})
    old, fresh = folder / "slot-4.bin", folder / "slot-5.bin"
    old.write_bytes(b"x" * 100)
    fresh.write_bytes(b"x" * 100)
    stale = time.time() - LEFTOVER_AFTER_S - 10
    os.utime(old, (stale, stale))

    assert cache.trim() == 100
    assert not old.exists() and fresh.exists() and (folder / "slot-0.bin").exists()


def test_remove_model_deletes_every_process_of_that_model_only(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path / "prompt-cache", 10_000)
    for process in ("m", "m#1"):
        saved(cache.folder("m", process), cache, 1.0, {0: 10})
    saved(cache.folder("other", "other"), cache, 1.0, {0: 10})

    assert cache.remove_model("m") is True
    assert cache.remove_model("m") is False
    assert not (cache.root / path_component("m")).exists()
    assert cache.read(cache.folder("other", "other")) is not None


def test_remove_model_never_follows_a_link_out_of_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    cache = PromptCache(tmp_path / "prompt-cache", 10_000)
    cache.root.mkdir()
    (cache.root / path_component("m")).symlink_to(outside)

    with pytest.raises(ValueError, match="outside"):
        cache.folder("m", "m")
    assert cache.remove_model("m") is True
    assert (outside / "keep.txt").read_text() == "mine"


def _manifests(cache: PromptCache) -> int:
    return sum(p.stat().st_size for p in cache.root.rglob(MANIFEST))
