"""POST /api/pull: download a GGUF model from the Hugging Face Hub into the store (as `hearth
pull` does), with Ollama's progress objects streamed as NDJSON.

The reference is Hearth's (`owner/repo`, `owner/repo:Q5_K_M`, `owner/repo/file.gguf`), also in
Ollama's Hugging Face form `hf.co/owner/repo:Q5_K_M`; `:latest` means the default quantization.
A name the catalogue already serves that is not a hub reference (`gemma-3-270m`) succeeds at
once; a name in Ollama's library style that is neither (`llama3.2`) is a 404 naming the hub
repositories a search finds for it. Without a tag the largest quantization that fits this
machine is pulled (`models.fit`); a hub that cannot be reached is a 503. The download runs in a
worker thread; if the client goes away it stops, keeping what it
fetched, and the next pull resumes it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from hearth.api.ollama import names
from hearth.api.ollama.generate import catalogue_name
from hearth.api.ollama.models import reload_catalogue
from hearth.api.ollama.protocol import PullRequest
from hearth.api.ollama.reply import NDJSON, line
from hearth.api.services import Services, services_of
from hearth.config import Settings
from hearth.engines.gpu import detect_accelerators, vram_budget
from hearth.errors import (
    APIError,
    HearthError,
    HubUnreachable,
    InvalidRequest,
    ModelNotFound,
    PullError,
    UpstreamUnavailable,
)
from hearth.models.fit import FitTarget, fit_target
from hearth.models.hub_ref import parse_ref
from hearth.models.pull import pull
from hearth.models.search import library_name_message
from hearth.models.store import ModelStore
from hearth.wire.base import parse_request

log = logging.getLogger(__name__)

router = APIRouter(tags=["ollama"])

PROGRESS_INTERVAL_S = 0.25  # at most this often per file, besides its first and last report


class _Stopped(Exception):
    """Raised in the download thread when the client went away."""


class Pulls:
    """The server's pulls: one of a reference at a time (two would write the same partial
    file), and the running ones kept referenced until they end."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._running: set[asyncio.Task[None]] = set()

    def lock(self, ref: str) -> asyncio.Lock:
        return self._locks.setdefault(ref, asyncio.Lock())

    def keep(self, task: asyncio.Task[None]) -> None:
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(_retrieve)


@router.post("/api/pull", summary="Ollama: download a model from the Hugging Face Hub")
async def pull_model(request: Request) -> Response:
    body = parse_request(PullRequest, await request.body())
    services = services_of(request)
    ref = _hub_ref(body.model)
    if ref is None:
        try:
            catalogue_name(request, body.model)  # 404 for a name that is neither
        except ModelNotFound as missing:
            found = await asyncio.to_thread(library_name_message, body.model)
            if found is not None:
                missing.message = f"{missing.message} {found}"
            raise
        return _done(body.stream)
    pulls: Pulls = request.app.state.ollama_pulls
    download = _Download(services, ref, pulls)
    if not body.stream:
        try:
            # Shielded: if the client goes away, the download thread is told to stop and the
            # pull keeps its lock until the thread has.
            await asyncio.shield(download.start())
        except HearthError as exc:
            raise _as_api_error(exc) from None
        finally:
            download.stop()
        return JSONResponse({"status": "success"})
    return StreamingResponse(download.lines(), media_type=NDJSON)


def _hub_ref(name: str) -> str | None:
    """The hub reference an Ollama model name is, or None if it is not one."""
    ref = names.canonical(name.strip())
    try:
        parse_ref(ref)
    except PullError:
        return None
    return ref


def _done(stream: bool) -> Response:
    if not stream:
        return JSONResponse({"status": "success"})

    async def lines() -> AsyncIterator[bytes]:
        yield line({"status": "pulling manifest"})
        yield line({"status": "success"})

    return StreamingResponse(lines(), media_type=NDJSON)


def _as_api_error(exc: HearthError) -> APIError:
    if isinstance(exc, HubUnreachable):
        return UpstreamUnavailable(str(exc), code="hub_unreachable")
    return exc if isinstance(exc, APIError) else InvalidRequest(str(exc), param="model")


class _Download:
    def __init__(self, services: Services, ref: str, pulls: Pulls) -> None:
        self.services = services
        self.ref = ref
        self.pulls = pulls
        self.stopped = threading.Event()
        self.updates: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.last_report: dict[str, float] = {}

    async def run(self) -> None:
        settings = self.services.settings
        store = ModelStore(settings.models_dir)
        async with self.pulls.lock(self.ref):
            target = await asyncio.to_thread(_machine_target, settings)
            model = await asyncio.to_thread(
                pull, self.ref, store, progress=self.progress, fit=target, explain=self.explain,
                keep=settings.store.keep_revisions,
            )  # fmt: skip
        log.info("pulled %s as %s", self.ref, model.name)
        await reload_catalogue(self.services)

    def start(self) -> asyncio.Task[None]:
        task = asyncio.create_task(self.run())
        self.pulls.keep(task)
        return task

    def stop(self) -> None:
        self.stopped.set()

    def explain(self, reason: str) -> None:
        """Called in the download thread with why a quantization was chosen."""
        log.info("pulling %s: %s", self.ref, reason)
        self.loop.call_soon_threadsafe(self.updates.put_nowait, {"status": reason})

    def progress(self, filename: str, done: int, total: int | None) -> None:
        """Called in the download thread when a file starts and after each chunk."""
        if self.stopped.is_set():
            raise _Stopped
        now = time.monotonic()
        last = self.last_report.get(filename)
        if last is not None and done != total and now - last < PROGRESS_INTERVAL_S:
            return
        self.last_report[filename] = now
        update = {"status": f"pulling {filename}", "digest": filename, "completed": done}
        if total is not None:
            update["total"] = total
        self.loop.call_soon_threadsafe(self.updates.put_nowait, update)

    async def lines(self) -> AsyncIterator[bytes]:
        yield line({"status": "pulling manifest"})
        task = self.start()
        task.add_done_callback(lambda _: self.updates.put_nowait({}))  # wakes the loop below
        try:
            while update := await self.updates.get():
                yield line(update)
            await task
        except (HearthError, _Stopped) as exc:
            yield line({"error": str(exc)})
            return
        finally:
            self.stop()  # if the client left, the download stops at its next chunk
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            yield line({"status": status})


def _machine_target(settings: Settings) -> FitTarget:
    """memory_budget if set, else VRAM if a GPU is found, else memory_fraction of RAM."""
    vram = None if settings.memory_budget is not None else vram_budget(detect_accelerators())
    return fit_target(settings, vram)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Read a finished pull's outcome, which its client may no longer be there to read."""
    if not task.cancelled() and isinstance(task.exception(), _Stopped):
        log.info("a pull stopped because its client went away; pulling again resumes it")
