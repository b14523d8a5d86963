"""Finding GGUF repositories on the Hugging Face Hub (`hearth search`, and the suggestions for a
name in Ollama's library style such as `llama3.2` or `qwen3:8b`), with each one's quantizations,
sizes and the one that fits this machine (`fit`)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import httpx2
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import (  # type: ignore[attr-defined]
    build_hf_headers,
    get_session,
    hf_raise_for_status,
)

from hearth.errors import HubUnreachable, PullError
from hearth.models.fit import FitTarget, QuantFit, assess, best, remote_gguf_info
from hearth.models.gguf_info import GGUFInfo
from hearth.models.hub_ref import HubRef, group_choices
from hearth.models.pull import API_TIMEOUT, HubSettings, list_files

Sort = Literal["trending", "downloads", "likes", "recent"]
SORTS = {  # --sort → the hub's sort key (as `HfApi.list_models` sends it)
    "trending": "trendingScore",
    "downloads": "downloads",
    "likes": "likes",
    "recent": "lastModified",
}
EXPAND = ["gguf", "downloads", "likes"]
WORKERS = 4  # repositories looked at together
_LIBRARY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?::[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_PARAMS_IN_NAME = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)([BbMm])(?![A-Za-z0-9])")


@dataclass(frozen=True)
class Found:
    """A repository the search found, as the search reports it."""

    repo_id: str
    parameters: int | None  # the hub's count from the GGUF metadata
    downloads: int | None
    likes: int | None


@dataclass(frozen=True)
class HubRepo:
    """One repository a search found, with what fits."""

    repo_id: str
    parameters: int | None
    downloads: int | None
    likes: int | None
    fits: tuple[QuantFit, ...]  # smallest first
    shape_known: bool  # the estimate includes the KV cache (the GGUF header was read)
    problem: str | None = None  # why its files could not be listed

    @property
    def best(self) -> QuantFit | None:
        return best(list(self.fits))


def search(
    query: str, target: FitTarget, *, sort: Sort = "trending", limit: int = 10,
    hub: HubSettings | None = None,
) -> list[HubRepo]:  # fmt: skip
    """GGUF repositories matching `query`, in the hub's order for `sort`, each with its files
    listed and measured against `target`. `HubUnreachable` if the hub does not answer."""
    hub = hub or HubSettings.from_environment()
    found = find_repos(query, sort=sort, limit=limit, hub=hub)
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(lambda item: _describe(item, target, hub), found))


def find_repos(
    query: str, *, sort: Sort = "trending", limit: int = 10, hub: HubSettings | None = None
) -> list[Found]:
    """The GGUF repositories the hub's search finds for `query` (the search request only, no
    files). It is the request `HfApi.list_models` sends, made once: list_models retries a hub
    that does not answer for about 20 s."""
    hub = hub or HubSettings.from_environment()
    if hub.offline:
        raise PullError("cannot search the hub: offline mode is on (HF_HUB_OFFLINE)")
    params: dict[str, str | int | list[str]] = {
        "search": query, "filter": "gguf", "sort": SORTS[sort], "limit": limit, "expand": EXPAND,
    }  # fmt: skip
    try:
        response = get_session().get(
            f"{hub.endpoint}/api/models", params=params, timeout=API_TIMEOUT,
            headers=build_hf_headers(token=hub.token),
        )  # fmt: skip
        hf_raise_for_status(response)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status >= 500:
            raise HubUnreachable(f"the hub at {hub.endpoint} failed to search ({status})") from None
        raise PullError(f"the hub at {hub.endpoint} refused the search: {exc}") from None
    except (httpx2.TransportError, OSError) as exc:
        raise HubUnreachable(
            f"cannot reach the Hugging Face Hub at {hub.endpoint} "
            f"({type(exc).__name__}: {exc or 'no answer'}); check the network connection (and "
            "HF_ENDPOINT if you use a mirror)"
        ) from None
    try:
        return [_found(item) for item in response.json()[:limit]]
    except (ValueError, TypeError, KeyError, AttributeError):
        raise HubUnreachable(
            f"the hub at {hub.endpoint} answered the search with something other than a list "
            "of models (is HF_ENDPOINT a Hugging Face Hub?)"
        ) from None


def _found(item: dict[str, Any]) -> Found:
    gguf = item.get("gguf") or {}
    total = gguf.get("total") if isinstance(gguf, dict) else None
    return Found(
        str(item["id"]),
        total if isinstance(total, int) else None,
        item.get("downloads"),
        item.get("likes"),
    )


def suggestions(name: str, *, limit: int = 5, hub: HubSettings | None = None) -> list[str]:
    """Hub repositories for a name in Ollama's library style (`qwen3:8b`): a search for the name,
    those also holding the tag (`8b`) first. Empty if the hub cannot be asked."""
    base, _, tag = name.strip().partition(":")
    base = base.rsplit("/", 1)[-1]
    if not base:
        return []
    try:
        found = [r.repo_id for r in find_repos(base, sort="downloads", limit=20, hub=hub)]
    except PullError:
        return []
    if tag and tag != "latest":
        found.sort(key=lambda repo_id: tag.lower() not in repo_id.lower())
    return found[:limit]


def parameters_from_name(repo_id: str) -> int | None:
    """`Qwen3-8B-GGUF` → 8e9, when the hub does not report a count."""
    match = _PARAMS_IN_NAME.search(repo_id.rsplit("/", 1)[-1])
    if match is None:
        return None
    scale = 1e9 if match[2].lower() == "b" else 1e6
    return int(float(match[1]) * scale)


def _describe(item: Found, target: FitTarget, hub: HubSettings) -> HubRepo:
    repo_id, parameters = item.repo_id, item.parameters
    try:
        files, revision = list_files(HubRef(repo_id), hub)
    except PullError as exc:
        return HubRepo(repo_id, parameters, item.downloads, item.likes, (), False, str(exc))
    choices = group_choices(files)
    info: GGUFInfo | None = None
    if choices:
        smallest = min(choices, key=lambda c: sum(f.size or 0 for f in c.files))
        info = remote_gguf_info(hub.endpoint, hub.token, repo_id, revision, smallest)
    if parameters is None and info is not None:
        parameters = info.parameter_count
    return HubRepo(
        repo_id,
        parameters or parameters_from_name(repo_id),
        item.downloads,
        item.likes,
        tuple(assess(choices, info, target)),
        info is not None,
    )


def library_name_message(name: str, hub: HubSettings | None = None) -> str | None:
    """For a name in Ollama's library style (`llama3.2`, `qwen3:8b`), a message naming the hub
    repositories a search finds for it; None for anything else."""
    if not _LIBRARY_NAME.match(name.strip()):
        return None
    found = suggestions(name, hub=hub)
    if not found:
        return (
            f"{name!r} is not a Hugging Face Hub repository and a search of the hub found no GGUF "
            "repository for it; pull owner/repo (see `hearth search`)"
        )
    return (
        f"{name!r} is not a Hugging Face Hub repository; did you mean "
        + ", ".join(found)
        + "? Pull one as owner/repo (see `hearth search`)"
    )
