"""Which quantization of a hub repository fits this machine: each choice's memory need, by the
scheduler's own estimate (`gguf_info.estimate_memory` at the configured ctx_size and slots),
against the memory there is (an explicit memory_budget, else free VRAM when there is a GPU,
else memory_fraction of RAM).

The estimate needs the model's shape (layers, KV heads), read from the GGUF header of one of the
repository's files (`remote_gguf_info`, a ranged GET); every quantization of a repository shares it.
Without it the need is the weights and the compute buffer only, and says so.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx
from huggingface_hub import hf_hub_url
from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

from hearth.config import Settings
from hearth.errors import ModelStoreError, PullError
from hearth.models.gguf_info import COMPUTE_BASE_BYTES, GGUFInfo, estimate_memory, read_gguf_info
from hearth.models.hub_ref import Choice

GIB = 1024**3
HEADER_BYTES = 4 * 1024 * 1024  # most GGUF headers (metadata + tokenizer + tensor list) fit
MAX_HEADER_BYTES = 64 * 1024 * 1024
HEADER_TIMEOUT = 30.0


@dataclass(frozen=True)
class FitTarget:
    """The memory a model may take and the settings it would be served with."""

    budget: int  # bytes
    where: str  # "RAM", "VRAM" or "the memory budget"
    ctx_size: int
    parallel: int

    def describe(self) -> str:
        return f"{gib(self.budget)} of {self.where} at ctx {self.ctx_size} x {self.parallel} slots"


@dataclass(frozen=True)
class QuantFit:
    choice: Choice
    size: int  # bytes of its files
    need: int  # estimated bytes to serve it
    fits: bool


def fit_target(settings: Settings, vram: int | None) -> FitTarget:
    """The target for these settings; `vram` is the GPU memory budget when a GPU was found
    (`engines.gpu.vram_budget`). An explicit memory_budget setting wins over both."""
    ctx, parallel = settings.engine.ctx_size, settings.engine.parallel
    if settings.memory_budget is not None:
        return FitTarget(int(settings.memory_budget), "the memory budget", ctx, parallel)
    if vram is not None:
        return FitTarget(vram, "VRAM", ctx, parallel)
    return FitTarget(settings.effective_memory_budget(), "RAM", ctx, parallel)


def size_of(choice: Choice) -> int:
    return sum(f.size or 0 for f in choice.files)


def assess(choices: list[Choice], info: GGUFInfo | None, target: FitTarget) -> list[QuantFit]:
    """Every choice with its need, smallest file first."""
    fits = []
    for choice in choices:
        size = size_of(choice)
        if info is not None:
            need = estimate_memory(info, size, target.ctx_size, target.parallel)
        else:
            need = size + COMPUTE_BASE_BYTES
        fits.append(QuantFit(choice, size, need, need <= target.budget))
    return sorted(fits, key=lambda f: (f.size, f.choice.tag))


def best(fits: list[QuantFit]) -> QuantFit | None:
    """The largest (highest quality) choice that fits, if any."""
    fitting = [f for f in fits if f.fits]
    return max(fitting, key=lambda f: f.size) if fitting else None


def pick(
    repo_id: str, choices: list[Choice], info: GGUFInfo | None, target: FitTarget
) -> tuple[Choice, str]:
    """The best choice that fits and one line saying why; `PullError` when none fits."""
    fits = assess(choices, info, target)
    chosen = best(fits)
    if chosen is None:
        smallest = fits[0]
        raise PullError(
            f"no quantization of {repo_id} fits {target.describe()}: the smallest, "
            f"{smallest.choice.tag} ({gb(smallest.size)}), needs {gib(smallest.need)}; pick one "
            f"with {repo_id}:TAG (--quant), lower engine.ctx_size or engine.parallel, or raise "
            "memory_budget"
        )
    shape = "" if info is not None else ", weights only: the model's shape could not be read"
    reason = (
        f"{chosen.choice.tag} ({gb(chosen.size)}) is the largest that fits {target.describe()} "
        f"(needs {gib(chosen.need)}{shape})"
    )
    return chosen.choice, reason


def gb(size: int) -> str:
    """A file size as `hearth ls` shows it (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB" if size >= GIB // 10 else f"{size / 2**20:.1f} MiB"


def remote_gguf_info(
    endpoint: str, token: str | None, repo_id: str, revision: str, choice: Choice
) -> GGUFInfo | None:
    """The GGUF header of `choice`'s first file read from the hub with a ranged GET (the first
    HEADER_BYTES, more if the header is longer), or None if it cannot be read."""
    name = choice.files[0].name
    url = hf_hub_url(repo_id, name, revision=revision, endpoint=endpoint)
    limit = HEADER_BYTES
    with tempfile.TemporaryDirectory(prefix="hearth-header-") as folder:
        path = Path(folder) / PurePosixPath(name).name
        while limit <= MAX_HEADER_BYTES:
            try:
                complete = _fetch_prefix(url, token, path, limit)
                return read_gguf_info(path)
            except ModelStoreError:
                if complete:
                    return None  # the whole file was read and is not a readable GGUF
                limit *= 4
            except httpx.HTTPError:
                return None
    return None


def _fetch_prefix(url: str, token: str | None, path: Path, limit: int) -> bool:
    """Write the first `limit` bytes at `url` to `path`; True if that was the whole file."""
    headers = build_hf_headers(token=token) | {"Range": f"bytes=0-{limit - 1}"}
    got = 0
    with (
        httpx.Client(follow_redirects=True, timeout=HEADER_TIMEOUT) as client,
        client.stream("GET", url, headers=headers) as response,
        path.open("wb") as out,
    ):
        response.raise_for_status()
        for chunk in response.iter_bytes():
            out.write(chunk[: limit - got])
            got += len(chunk)
            if got >= limit:
                return False
    return True
