"""Download GGUF models from the Hugging Face Hub into the store, resumably and verified.

The file list and checksums come from the hub's model API (`huggingface_hub.HfApi`); the bytes
are fetched here, so that a transfer cut short keeps its `.partial` file and the next pull
continues it with a Range request, and every file is checked against the sha256 the hub
publishes before it is registered. `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE` are read when
a pull starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import httpx2
from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

from hearth.errors import ChecksumMismatch, HubUnreachable, PullError
from hearth.models.fit import FitTarget, pick, remote_gguf_info
from hearth.models.hub_ref import (
    Choice,
    HubFile,
    HubRef,
    check_filenames,
    choose,
    group_choices,
    parse_ref,
)
from hearth.models.projector import choose_projector
from hearth.models.store import (
    DEFAULT_KEEP_REVISIONS,
    ModelStore,
    StoredModel,
    inside,
    validate_name,
)

# (file name, bytes done, total bytes or None); called when a file starts and after each chunk.
Progress = Callable[[str, int, int | None], None]

CHUNK_BYTES = 1024 * 1024
ATTEMPTS = 3  # per file and pull; a pull that still fails keeps the .partial for the next one
RETRY_DELAY = 0.5
API_TIMEOUT = 20.0
_TRUE = {"1", "ON", "YES", "TRUE"}
_REVISION_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class HubSettings:
    """Where and how to reach the hub, read from the environment when a pull starts."""

    endpoint: str
    token: str | None
    offline: bool

    @classmethod
    def from_environment(cls) -> HubSettings:
        endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
        offline = constants.is_offline_mode() or (
            os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE
        )
        return cls(endpoint.rstrip("/"), os.environ.get("HF_TOKEN") or None, offline)


def pull(
    ref: str,
    store: ModelStore,
    *,
    name: str | None = None,
    progress: Progress | None = None,
    hub: HubSettings | None = None,
    quant: str | None = None,
    fit: FitTarget | None = None,
    explain: Callable[[str], None] | None = None,
    keep: int = DEFAULT_KEEP_REVISIONS,
) -> StoredModel:
    """Download the model `ref` names (see `hub_ref`) at the hub's current revision and register
    it as `name` (default `owner/repo:TAG`). Files already downloaded and verified are not
    fetched again. `quant` overrides the reference's tag; without either, `fit` picks the
    largest quantization that fits the machine (see `fit`) and `explain` is told why. A model of
    that name at another revision keeps it as an earlier one (at most `keep` of them)."""
    parsed = parse_ref(ref)
    if quant:
        parsed = HubRef(parsed.repo_id, tag=quant)
    hub = hub or HubSettings.from_environment()
    if hub.offline:
        raise PullError(
            f"cannot pull {ref}: Hugging Face Hub offline mode is on (HF_HUB_OFFLINE). Unset it "
            "to download, or register a GGUF file you already have with `hearth import PATH`"
        )
    files, revision = list_files(parsed, hub)
    choices = group_choices(files)
    if fit is not None and parsed.tag is None and parsed.filename is None and len(choices) > 1:
        info = remote_gguf_info(hub.endpoint, hub.token, parsed.repo_id, revision, choices[0])
        choice, reason = pick(parsed.repo_id, choices, info, fit)
        if explain:
            explain(reason)
    else:
        choice = choose(parsed, files)
    model_name = validate_name(name or f"{parsed.repo_id}:{choice.tag}")
    _check_name_free(store, model_name, parsed.repo_id)
    # A vision model's projector (mmproj-*.gguf) comes with it: see models/projector.py.
    projector = choose_projector(files, choice.files[0], choice.tag)
    fetched = Choice(choice.tag, choice.files + ((projector,) if projector else ()))

    if not _REVISION_FOLDER.match(revision):
        raise PullError(
            f"the hub named the revision of {parsed.repo_id} {revision!r}, which cannot name a "
            "folder; nothing was downloaded. If HF_ENDPOINT points at a mirror, check it"
        )
    existing = _already_there(store, model_name, revision, fetched)
    if existing is not None:
        return existing
    folder = store.models_dir / "hub" / parsed.repo_id / revision
    for file in fetched.files:
        if not inside(folder / file.name, store.models_dir):
            raise PullError(
                f"{file.name} from {parsed.repo_id} would be written outside {store.models_dir} "
                f"(is {folder} a link elsewhere?); nothing was downloaded"
            )
    _check_disk_space(folder, fetched)
    headers = build_hf_headers(token=hub.token)
    paths = []
    try:
        with httpx.Client(
            follow_redirects=True, timeout=httpx.Timeout(60.0, connect=15.0), headers=headers
        ) as client:
            for file in fetched.files:
                url = file_url(hub, parsed.repo_id, file.name, revision)
                paths.append(fetch_file(client, url, folder / file.name, file, progress))
    except BaseException:
        with contextlib.suppress(OSError):
            folder.rmdir()  # a revision folder this pull made and left empty
        raise
    model, _ = store.record_revision(
        StoredModel(
            name=model_name,
            kind="pulled",
            source=f"{parsed.repo_id}/{choice.files[0].name} (Hugging Face Hub, {revision})",
            files=tuple(paths[: len(choice.files)]),
            copied=True,
            size=sum(p.stat().st_size for p in paths[: len(choice.files)]),
            added=datetime.now(UTC),
            sha256=tuple(f.sha256 or "" for f in choice.files),
            revision=revision,
            repo=parsed.repo_id,
            projector=paths[-1] if projector is not None else None,
        ),
        keep,
    )
    return model


def _already_there(
    store: ModelStore, name: str, revision: str, choice: Choice
) -> StoredModel | None:
    """The model `name` if it already serves these files (its projector included) at this
    revision (also when pulled before revisions had folders of their own): nothing to fetch or
    record."""
    if name not in store:
        return None
    model = store.get(name)
    same_files = len(model.all_files) == len(choice.files) and all(
        path.as_posix().endswith("/" + file.name)
        for path, file in zip(model.all_files, choice.files, strict=True)
    )
    if model.revision == revision and same_files and all(f.is_file() for f in model.all_files):
        return model
    return None


def file_url(hub: HubSettings, repo_id: str, filename: str, revision: str) -> str:
    return hf_hub_url(repo_id, filename, revision=revision, endpoint=hub.endpoint)


def list_files(ref: HubRef, hub: HubSettings) -> tuple[list[HubFile], str]:
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    try:
        info = api.model_info(ref.repo_id, files_metadata=True, timeout=API_TIMEOUT)
    except GatedRepoError:
        raise PullError(
            f"{ref.repo_id} is gated: accept its terms on {hub.endpoint}/{ref.repo_id} and set "
            "HF_TOKEN to a token of that account"
        ) from None
    except RepositoryNotFoundError:
        raise PullError(
            f"there is no model repository {ref.repo_id} on {hub.endpoint} (or it is private: "
            "set HF_TOKEN to a token that can read it)"
        ) from None
    except OfflineModeIsEnabled:
        raise PullError(
            f"cannot pull {ref}: Hugging Face Hub offline mode is on (HF_HUB_OFFLINE); register "
            "a GGUF file you already have with `hearth import PATH`"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and status >= 500:
            raise HubUnreachable(
                f"the hub at {hub.endpoint} failed to list {ref.repo_id} ({status}); try again "
                "later"
            ) from None
        raise PullError(f"the hub at {hub.endpoint} refused to list {ref.repo_id}: {exc}") from None
    except (httpx2.TransportError, OSError) as exc:
        raise _unreachable(ref, hub, exc) from None
    files = [
        HubFile(
            name=s.rfilename,
            size=s.lfs.size if s.lfs else s.size,
            sha256=s.lfs.sha256 if s.lfs else None,
            blob_id=s.blob_id,
        )
        for s in info.siblings or []
    ]
    check_filenames(ref.repo_id, files)
    return files, info.sha or "main"


def _unreachable(ref: HubRef, hub: HubSettings, exc: Exception) -> HubUnreachable:
    return HubUnreachable(
        f"cannot reach the Hugging Face Hub at {hub.endpoint} to pull {ref} "
        f"({type(exc).__name__}: {exc or 'no answer'}). Check the network connection (and "
        "HF_ENDPOINT if you use a mirror); without a network, register a GGUF file you already "
        "have with `hearth import PATH`"
    )


def _check_name_free(store: ModelStore, name: str, repo_id: str) -> None:
    if name not in store:
        return
    existing = store.get(name)
    if existing.kind != "pulled" or not existing.source.startswith(f"{repo_id}/"):
        raise PullError(
            f"a model named '{name}' already exists ({existing.source}); pull under another "
            f"name with --name or remove it first with `hearth rm {name}`"
        )


def _check_disk_space(folder: Path, choice: Choice) -> None:
    needed = 0
    for file in choice.files:
        target = folder / file.name
        partial = _partial_path(target)
        if file.size and not target.is_file():
            needed += file.size - (partial.stat().st_size if partial.is_file() else 0)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise PullError(
            f"{choice.label} needs {needed / 1e9:.1f} GB but only {free / 1e9:.1f} GB is free "
            f"under {probe}; free some space (`hearth rm` unused models) or move --data-dir"
        )


def _partial_path(target: Path) -> Path:
    return target.with_name(target.name + ".partial")


def _marker_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def fetch_file(
    client: httpx.Client, url: str, target: Path, file: HubFile, progress: Progress | None
) -> Path:
    """Download one file to `target` unless it is already there and verified."""
    published = file.sha256 or file.blob_id or ""
    marker = _marker_path(target)
    if target.is_file() and marker.is_file() and marker.read_text().strip() == published:
        if progress:
            progress(file.name, target.stat().st_size, target.stat().st_size)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_path(target)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _transfer(client, url, partial, file, progress)
            break
        except (httpx.TransportError, _Incomplete) as exc:
            if attempt == ATTEMPTS:
                kept = partial.stat().st_size if partial.is_file() else 0
                raise HubUnreachable(
                    f"the download of {file.name} was interrupted ({exc}); {kept} bytes are kept "
                    "and running the same `hearth pull` again resumes it"
                ) from None
            time.sleep(RETRY_DELAY * attempt)
    _verify(partial, file)
    partial.replace(target)
    marker.write_text(published + "\n")
    return target


class _Incomplete(Exception):
    """The server ended the body before the file was complete."""


def _transfer(
    client: httpx.Client, url: str, partial: Path, file: HubFile, progress: Progress | None
) -> None:
    done = partial.stat().st_size if partial.is_file() else 0
    if file.size is not None and done > file.size:
        partial.unlink()
        done = 0
    if file.size is not None and done == file.size:
        return  # complete; verified by the caller
    headers = {"Range": f"bytes={done}-"} if done else {}
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 416:  # our partial is not a prefix of the file: start over
            partial.unlink(missing_ok=True)
            raise _Incomplete("the server refused to resume; starting over")
        _raise_for_status(response, file)
        resumed = response.status_code == 206 and response.headers.get(
            "Content-Range", ""
        ).startswith(f"bytes {done}-")
        if not resumed:
            done = 0
        if progress:
            progress(file.name, done, file.size)
        with partial.open("ab" if resumed else "wb") as out:
            for chunk in response.iter_bytes():  # as received: a cut keeps every byte
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(file.name, done, file.size)
    if file.size is not None and done < file.size:
        raise _Incomplete(f"got {done} of {file.size} bytes")


def _raise_for_status(response: httpx.Response, file: HubFile) -> None:
    status = response.status_code
    if status in (200, 206):
        return
    if status in (401, 403):
        raise PullError(
            f"the hub refused {file.name} ({status}); if the repository is private or gated, "
            "set HF_TOKEN to a token that can read it"
        )
    if status == 404:
        raise PullError(f"the hub has no file {file.name} at {response.url} (404)")
    if status >= 500:
        raise _Incomplete(f"the hub answered {status}")
    raise PullError(f"the hub answered {status} for {file.name}")


def _verify(partial: Path, file: HubFile) -> None:
    size = partial.stat().st_size
    if file.size is not None and size != file.size:
        partial.unlink()
        raise PullError(
            f"{file.name} is {size} bytes but the hub lists {file.size}; it was deleted, run "
            "`hearth pull` again"
        )
    if file.sha256:
        expected, actual = file.sha256, _digest(partial, hashlib.sha256())
        kind = "sha256"
    elif file.blob_id:
        # Files outside LFS are identified by their git blob id: sha1("blob <size>\0" + bytes).
        expected = file.blob_id
        actual = _digest(partial, hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False))
        kind = "git blob id"
    else:
        return
    if actual != expected:
        partial.unlink()
        raise ChecksumMismatch(
            f"{file.name} does not match the {kind} the hub publishes (expected {expected}, got "
            f"{actual}); the download was deleted and nothing was registered. Run `hearth pull` "
            "again; if it keeps failing, the mirror or a proxy is altering the file"
        )


def _digest(path: Path, hasher: hashlib._Hash) -> str:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()
