"""Saved prompt caches on disk: a folder per model and engine process under the data folder,
each with a manifest of its saved slots, all of them together kept under one size bound.

Layout of `<data_dir>/prompt-cache/`:
    <model>/<process>/manifest.json   what was saved, when, and for which model file and settings
    <model>/<process>/slot-<id>.bin   one slot's KV cache, as the engine wrote it

`<model>` is the catalogue name and `<process>` the supervisor's (`model` or `model#i`), both
quoted to one path-safe component. Hearth writes and deletes only inside this folder, and names
files after slot numbers only, never after anything a request sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hearth.models.store import inside

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_SLOT_FILE = re.compile(r"^slot-(\d{1,4})\.bin$")
# A slot file no manifest lists yet may be one an engine is writing right now (another process's
# save in progress): it is only deleted as a leftover once it is this old.
LEFTOVER_AFTER_S = 120.0
_MAX_COMPONENT = 120


def slot_file(slot: int) -> str:
    return f"slot-{slot}.bin"


def path_component(name: str) -> str:
    """`name` as one file name: percent-quoted (so distinct names stay distinct), a leading dot
    quoted too (no `.` or `..`), and a long name shortened with a hash of the whole."""
    quoted = quote(name, safe="")
    if quoted.startswith("."):
        quoted = "%2E" + quoted[1:]
    if len(quoted) > _MAX_COMPONENT:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        quoted = f"{quoted[: _MAX_COMPONENT - 17]}-{digest}"
    return quoted or "%00"


@dataclass(frozen=True)
class SavedSlot:
    slot: int
    file: str
    tokens: int
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """One engine process's saved slots, hottest (most recently used) first. `identity` says
    what they are valid for (the model file, the engine and its settings): a manifest whose
    identity differs from the engine's now is stale and is never restored."""

    identity: dict[str, Any]
    saved_at: float
    slots: tuple[SavedSlot, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "identity": self.identity,
            "saved_at": self.saved_at,
            "slots": [asdict(s) for s in self.slots],
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Parse a manifest; ValueError if it is not one this version wrote."""
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ValueError("not a version-1 manifest")
        slots = []
        for item in data["slots"]:
            saved = SavedSlot(int(item["slot"]), str(item["file"]), int(item["tokens"]),
                              int(item["bytes"]))  # fmt: skip
            if saved.file != slot_file(saved.slot):
                raise ValueError(f"unexpected file name {saved.file!r}")
            slots.append(saved)
        if not isinstance(data["identity"], dict):
            raise ValueError("no identity")
        return cls(data["identity"], float(data["saved_at"]), tuple(slots))


class PromptCache:
    """The prompt-cache folder, bounded to `max_bytes` in all (0: the feature is off)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def folder(self, model: str, process: str) -> Path:
        """The folder of one engine process's saved slots (not created)."""
        return self._checked(self.root / path_component(model) / path_component(process))

    def read(self, folder: Path) -> Manifest | None:
        """The folder's manifest; None when there is none or it cannot be read (then the folder
        is emptied: files without a readable manifest are of no use)."""
        path = folder / MANIFEST
        try:
            return Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("prompt cache %s is unreadable (%s); deleting it", path, exc)
            self.clear(folder)
            return None

    def write(self, folder: Path, manifest: Manifest) -> None:
        """Record the folder's manifest (atomically) and delete the slot files it does not list."""
        folder.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".manifest.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(manifest.to_json(), handle, indent=2)
            os.replace(temp, folder / MANIFEST)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        listed = {s.file for s in manifest.slots}
        for path in folder.iterdir():
            if path.name != MANIFEST and path.name not in listed:
                path.unlink(missing_ok=True)

    def clear(self, folder: Path) -> None:
        """Delete one engine process's saved slots and their manifest. The folder stays: a
        running engine was told to save into it."""
        if not folder.is_dir() or not inside(folder, self.root):
            return
        for path in folder.iterdir():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def remove_model(self, model: str) -> bool:
        """Delete every saved slot of a model (all its processes); whether there were any."""
        folder = self.root / path_component(model)
        if folder.is_symlink():  # not made by Hearth: drop the link, never what it points to
            folder.unlink()
            return True
        if not folder.is_dir():
            return False
        shutil.rmtree(folder, ignore_errors=True)
        log.info("deleted the saved prompt caches of model %s", model)
        return True

    def size(self) -> int:
        """Bytes of every file in the prompt-cache folder."""
        return sum(size for _, size in self._files())

    def trim(self, now: float | None = None) -> int:
        """Keep the whole folder within `max_bytes`: delete leftovers (files no manifest lists,
        once they are old enough), then saved slots, the oldest save first and, within one save,
        the coldest slot first. Returns the bytes deleted."""
        now = time.time() if now is None else now
        deleted = 0
        total = 0
        candidates: list[tuple[float, int, Path, SavedSlot]] = []
        for folder in self._process_folders():
            manifest = self.read(folder)
            listed = {s.file: s for s in manifest.slots} if manifest else {}
            for path in folder.iterdir():
                if path.name == MANIFEST or path.name.startswith(".manifest."):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                if path.name not in listed and now - stat.st_mtime > LEFTOVER_AFTER_S:
                    path.unlink(missing_ok=True)
                    deleted += stat.st_size
                    continue
                total += stat.st_size
            if manifest is not None:
                for rank, saved in enumerate(manifest.slots):
                    candidates.append((manifest.saved_at, -rank, folder, saved))
        candidates.sort(key=lambda c: (c[0], c[1]))
        dropped: dict[Path, set[int]] = {}
        for _, _, folder, saved in candidates:
            if total <= self.max_bytes:
                break
            path = folder / saved.file
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                total -= size
                deleted += size
            dropped.setdefault(folder, set()).add(saved.slot)
        for folder, slots in dropped.items():
            self._forget(folder, slots)
        if deleted:
            log.info("prompt cache: deleted %d bytes to stay within %d", deleted, self.max_bytes)
        return deleted

    def _forget(self, folder: Path, slots: set[int]) -> None:
        manifest = self.read(folder)
        if manifest is None:
            return
        kept = tuple(s for s in manifest.slots if s.slot not in slots)
        self.write(folder, Manifest(manifest.identity, manifest.saved_at, kept))

    def _process_folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [
            folder
            for model in self.root.iterdir()
            if model.is_dir() and not model.is_symlink()
            for folder in model.iterdir()
            if folder.is_dir() and not folder.is_symlink()
        ]

    def _files(self) -> list[tuple[Path, int]]:
        found = []
        for folder in self._process_folders():
            for path in folder.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    found.append((path, path.stat().st_size))
        return found

    def _checked(self, path: Path) -> Path:
        if not inside(path, self.root):
            raise ValueError(f"{path} is outside the prompt-cache folder {self.root}")
        return path
