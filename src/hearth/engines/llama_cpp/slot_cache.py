"""llama-server's slots kept across unloads: before the engine stops, its most recently used slots
are saved into the prompt cache (`POST /slots/{id}?action=save`); once it has started again they
are restored into the same slots, so a conversation's next turn reuses its prompt prefix instead
of reading it all again.

Restored files are kept, not deleted: they stay valid for their tokens, so a crash after the
restore still finds them, and the next save replaces them. A slot restored and not used since is
carried over to the next save as it is (llama-server's /slots cannot tell its tokens then).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hearth.config import EngineSettings
from hearth.engines.prompt_cache import Manifest, PromptCache, SavedSlot, slot_file

log = logging.getLogger(__name__)

# A shorter prompt is computed again about as fast as its file would be read.
MIN_TOKENS = 64
# Slots saved per engine at most, the most recently used first: each costs time at unload.
MOST_SLOTS = 4
# Each call to llama-server; the supervisor also bounds each hook as a whole.
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SlotCache:
    """The process hooks of one llama.cpp model that save and restore its slots."""

    cache: PromptCache
    model: str  # the catalogue name: `hearth rm` deletes the model's folder by it
    model_path: Path
    binary: Path | None
    settings: EngineSettings
    # One save or restore at a time per process name: a model unloaded and at once loaded again
    # starts a new engine on the same folder while the old one may still be saving into it.
    _busy: dict[str, asyncio.Lock] = field(default_factory=dict, compare=False, repr=False)

    def identity(self) -> dict[str, Any]:
        """What saved slots are valid for: a different model file, llama-server build or KV
        layout (context, slots, extra flags such as the cache type) makes them stale."""
        s = self.settings
        return {
            "model": _file_identity(self.model_path),
            "engine": _file_identity(self.binary) if self.binary is not None else None,
            "ctx_size": s.ctx_size,
            "parallel": s.parallel,
            "extra_args": list(s.extra_args),
        }

    def start_args(self, name: str) -> list[str]:
        try:
            folder = self.cache.folder(self.model, name)
            folder.mkdir(parents=True, exist_ok=True)
        except (OSError, ValueError) as exc:
            log.warning("model %s: prompt cache unavailable (%s); starting without it", name, exc)
            return []
        # A sliding-window model (Gemma 3) keeps only the window in its cache, and llama-server
        # reuses a restored prefix of one only with the full cache: without it, every restored
        # prompt is read again. Hearth's memory estimate already counts the full cache; a model
        # without sliding-window layers ignores the flag.
        return ["--slot-save-path", str(folder), "--swa-full"]

    async def after_ready(self, name: str, base_url: str) -> None:
        async with self._busy.setdefault(name, asyncio.Lock()):
            await self._restore(name, base_url)

    async def before_stop(self, name: str, base_url: str) -> None:
        async with self._busy.setdefault(name, asyncio.Lock()):
            await self._save(name, base_url)

    async def _restore(self, name: str, base_url: str) -> None:
        folder = self.cache.folder(self.model, name)
        manifest = self.cache.read(folder)
        if manifest is None or not manifest.slots:
            return
        if manifest.identity != self.identity():
            log.info("model %s: saved prompt caches are stale (model or settings changed)", name)
            self.cache.write(folder, Manifest(manifest.identity, manifest.saved_at, ()))
            return
        started = time.monotonic()
        restored: list[SavedSlot] = []
        async with _client(base_url) as client:
            for saved in manifest.slots:
                if saved.slot >= self.settings.parallel or not (folder / saved.file).is_file():
                    continue
                response = await client.post(
                    f"/slots/{saved.slot}",
                    params={"action": "restore"},
                    json={"filename": saved.file},
                )
                if response.status_code == 200:
                    restored.append(saved)
                else:
                    log.warning(
                        "model %s: could not restore slot %d (%s); deleting it",
                        name, saved.slot, _reason(response),
                    )  # fmt: skip
        if len(restored) != len(manifest.slots):
            self.cache.write(
                folder, Manifest(manifest.identity, manifest.saved_at, tuple(restored))
            )
        log.info(
            "model %s: restored %d saved prompt(s), %d tokens, in %.2fs",
            name, len(restored), sum(s.tokens for s in restored), time.monotonic() - started,
        )  # fmt: skip

    async def _save(self, name: str, base_url: str) -> None:
        folder = self.cache.folder(self.model, name)
        folder.mkdir(parents=True, exist_ok=True)  # a trim may have removed it while it ran
        identity = self.identity()
        previous = self.cache.read(folder)
        started = time.monotonic()
        async with _client(base_url) as client:
            response = await client.get("/slots")
            response.raise_for_status()
            slots = [s for s in response.json() if isinstance(s, dict)]
            hottest = _hottest(slots)
            # Slots restored and untouched since: their files still hold exactly what they hold.
            untouched = {s.get("id") for s in slots if "id_task" not in s}
            carried: list[SavedSlot] = []
            if previous is not None and previous.identity == identity:
                carried = [s for s in previous.slots if s.slot in untouched]
            # From here the manifest lists only complete files, whenever this is cut short.
            self.cache.write(folder, Manifest(identity, time.time(), tuple(carried)))
            saved: list[SavedSlot] = []
            used = 0
            for slot in hottest[:MOST_SLOTS]:
                reply = await client.post(
                    f"/slots/{slot}", params={"action": "save"}, json={"filename": slot_file(slot)}
                )
                if reply.status_code != 200:
                    log.warning("model %s: could not save slot %d (%s)", name, slot, _reason(reply))
                    continue
                data = reply.json()
                size, tokens = int(data.get("n_written", 0)), int(data.get("n_saved", 0))
                if used + size > self.cache.max_bytes:
                    break  # the file is deleted below, as one the manifest does not list
                used += size
                saved.append(SavedSlot(slot, slot_file(slot), tokens, size))
                self.cache.write(folder, Manifest(identity, time.time(), (*saved, *carried)))
        # Slots used since the last load come first; the untouched ones fill what room is left.
        kept = list(saved)
        for slot_saved in carried:
            if len(kept) < MOST_SLOTS and used + slot_saved.bytes <= self.cache.max_bytes:
                kept.append(slot_saved)
                used += slot_saved.bytes
        self.cache.write(folder, Manifest(identity, time.time(), tuple(kept)))
        self.cache.trim()
        log.info(
            "model %s: saved %d prompt(s), %d tokens, %d bytes, in %.2fs",
            name, len(saved), sum(s.tokens for s in saved), sum(s.bytes for s in saved),
            time.monotonic() - started,
        )  # fmt: skip


def _hottest(slots: list[dict[str, Any]]) -> list[int]:
    """Idle slots worth saving, the most recently used first (llama-server numbers tasks in
    order, and a slot reports the id of its last one)."""
    worth = [
        s
        for s in slots
        if isinstance(s.get("id"), int)
        and isinstance(s.get("id_task"), int)
        and not s.get("is_processing")
        and isinstance(s.get("n_prompt_tokens"), int)
        and s["n_prompt_tokens"] >= MIN_TOKENS
    ]
    return [s["id"] for s in sorted(worth, key=lambda s: s["id_task"], reverse=True)]


def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _client(base_url: str) -> httpx.AsyncClient:
    # The engine is on loopback: never through a user's HTTP proxy.
    return httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S, trust_env=False)


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
