"""Revisions of pulled models: which are out of date on the hub, updating one to the hub's
current revision (the one it replaces kept, as `NAME@abc1234`), rolling back to a kept one.

A pulled model records the commit its files come from (`StoredModel.revision`) and keeps the
revisions an update replaced (`StoredModel.older`, newest first, at most `store.keep_revisions`
of them; see `ModelStore.record_revision`). Each revision has a folder of its own,
`hub/<owner>/<repo>/<revision>/`, so an update downloads beside the files in use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from hearth.errors import HearthError, PullError
from hearth.models.hub_ref import HubRef, quantization_of
from hearth.models.pull import HubSettings, Progress, list_files, pull
from hearth.models.store import (
    DEFAULT_KEEP_REVISIONS,
    ModelStore,
    StoredModel,
    short_revision,
    split_revision,
)


@dataclass(frozen=True)
class Freshness:
    """How a pulled model's revision compares with its repository's on the hub."""

    name: str
    revision: str | None  # the model's (None: not recorded)
    upstream: str | None  # the hub's now (None: not known, see `problem`)
    problem: str | None = None  # why the hub could not be asked

    @property
    def outdated(self) -> bool:
        return self.upstream is not None and self.upstream != self.revision


@dataclass(frozen=True)
class Update:
    """What `update` did: the model now, and the revision it replaced (None: up to date)."""

    model: StoredModel
    replaced: str | None


def pulled_models(store: ModelStore) -> list[StoredModel]:
    """The models pulled from the hub (their current revisions, not the kept ones)."""
    return [m for m in store.list() if m.kind == "pulled" and m.repo and "@" not in m.name]


def check(store: ModelStore, hub: HubSettings | None = None) -> list[Freshness]:
    """Each pulled model against its repository's current revision. The hub is asked once per
    repository; one it cannot answer for is a `problem` of that model, not an error."""
    hub = hub or HubSettings.from_environment()
    upstream: dict[str, str | HearthError] = {}
    found = []
    for model in pulled_models(store):
        repo = model.repo or ""
        if repo not in upstream:
            try:
                upstream[repo] = _upstream_revision(repo, hub)
            except HearthError as exc:
                upstream[repo] = exc
        answer = upstream[repo]
        if isinstance(answer, HearthError):
            found.append(Freshness(model.name, model.revision, None, str(answer)))
        else:
            found.append(Freshness(model.name, model.revision, answer))
    return found


def update(
    store: ModelStore,
    name: str,
    *,
    progress: Progress | None = None,
    hub: HubSettings | None = None,
    keep: int = DEFAULT_KEEP_REVISIONS,
) -> Update:
    """Pull the hub's current revision of the model `name` (the same file, or the same
    quantization if the file was renamed) beside the one in use, and make `name` serve it."""
    model = _updatable(store, name)
    hub = hub or HubSettings.from_environment()
    files, revision = list_files(HubRef(model.repo or ""), _online(hub))
    if revision == model.revision:
        return Update(model, None)
    wanted = hub_filenames(store, model)
    listed = {f.name for f in files}
    if wanted and all(w in listed for w in wanted):
        ref = f"{model.repo}/{wanted[0]}"
    elif wanted and (tag := quantization_of(wanted[0])) is not None:
        ref = f"{model.repo}:{tag}"
    else:
        raise PullError(
            f"{model.repo} no longer has {wanted[0] if wanted else 'the file'} of {name}; pull "
            f"another of its files with `hearth pull {model.repo}:TAG --name {name}`"
        )
    updated = pull(ref, store, name=name, progress=progress, hub=hub, keep=keep)
    return Update(updated, model.revision)


def rollback(store: ModelStore, name: str, to: str | None = None) -> StoredModel:
    """Make `name` serve its previous kept revision (or the kept one `to` names: 7 to 40 hex
    digits); the revision it served becomes a kept one, so rolling forward is a rollback too."""
    base, revision = split_revision(name)
    if revision is not None:
        raise PullError(f"roll back a model by its name ({base}), not one of its revisions")
    model = store.get(name)
    if model.kind != "pulled" or not model.older:
        raise PullError(
            f"{name} has no earlier revision kept to roll back to"
            + ("" if model.kind == "pulled" else f" (it is {model.kind}, not pulled)")
        )
    target = model.older[0]
    if to is not None:
        target = store.get(f"{name}@{to}").as_revision()
        if target.revision == model.revision:
            raise PullError(f"{name} already serves {short_revision(model.revision or '')}")
    older = (model.as_revision(), *(r for r in model.older if r.revision != target.revision))
    restored = replace(
        model,
        source=target.source,
        files=target.files,
        size=target.size,
        added=target.added,
        sha256=target.sha256,
        revision=target.revision,
        older=older,
        projector=target.projector,
    )
    return store.register(restored, replace=True)


def hub_filenames(store: ModelStore, model: StoredModel) -> list[str]:
    """The names in its hub repository of a pulled model's files, from where they are stored:
    `hub/<repo>/<revision>/<name>`, or `hub/<repo>/<name>` for pulls from before revisions."""
    names = []
    root = store.models_dir / "hub" / (model.repo or "")
    for path in model.files:
        if not path.is_relative_to(root):
            return []
        parts = PurePosixPath(path.relative_to(root).as_posix()).parts
        if model.revision and len(parts) > 1 and parts[0] == model.revision:
            parts = parts[1:]
        names.append("/".join(parts))
    return names


def _updatable(store: ModelStore, name: str) -> StoredModel:
    base, revision = split_revision(name)
    if revision is not None:
        raise PullError(f"update a model by its name ({base}), not one of its revisions")
    model = store.get(name)
    if model.kind != "pulled" or not model.repo:
        raise PullError(
            f"{name} was not pulled from the Hugging Face Hub ({model.kind}); only pulled "
            "models have revisions to update"
        )
    return model


def _upstream_revision(repo: str, hub: HubSettings) -> str:
    return list_files(HubRef(repo), _online(hub))[1]


def _online(hub: HubSettings) -> HubSettings:
    if hub.offline:
        raise PullError(
            "Hugging Face Hub offline mode is on (HF_HUB_OFFLINE); unset it to ask the hub"
        )
    return hub


def revision_names(models: list[StoredModel]) -> tuple[dict[str, str], dict[str, str]]:
    """For the catalogue: every revision name (`NAME@abc1234` → its whole commit), and the name
    of each pulled model's current revision (`NAME` → `NAME@abc1234`), an alias of `NAME`. The
    kept revisions are in `models` (`ModelStore.list`) under their own names."""
    commits: dict[str, str] = {}
    current: dict[str, str] = {}
    for model in models:
        if model.kind != "pulled" or not model.revision:
            continue
        if split_revision(model.name)[1] is not None:
            commits[model.name] = model.revision
        elif re.fullmatch(r"[0-9a-f]{40}", model.revision):
            alias = f"{model.name}@{short_revision(model.revision)}"
            commits[alias], current[model.name] = model.revision, alias
    return commits, current


def canonical_name(name: str, store: ModelStore) -> str:
    """`NAME@abc1234` for a settings key naming a stored revision with more digits; else
    `name` as it is."""
    if split_revision(name)[1] is None:
        return name
    try:
        return store.get(name).name
    except HearthError:
        return name
