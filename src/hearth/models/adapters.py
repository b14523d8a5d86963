"""LoRA adapters attached to stored models, kept under `<models_dir>/adapters/<quoted model>/`
as `<name>.gguf` with `<name>.json` (its source and when it was added) beside it.

`hearth adapter add` copies a LoRA GGUF there; `convert_adapter` writes one from a PEFT adapter
folder with llama.cpp's convert_lora_to_gguf.py (also behind `hearth convert`). The llama.cpp
engine loads every adapter of its model, and a request picks one (engines/llama_cpp/engine.py).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hearth.config import ADAPTER_NAME, ADAPTER_NAME_RULE, Settings
from hearth.errors import ModelStoreError, SetupError
from hearth.models.bundled_embeddings import EMBEDDINGS_MODEL_NAME
from hearth.models.gguf_info import TensorInfo, read_gguf_header, split_parts
from hearth.models.store import ModelStore, write_json_atomically

Progress = Callable[[str], None]
CONVERT_TIMEOUT = 3600.0  # seconds; an adapter is small, this only stops a hung converter
_LOG_LINES = 20  # of the converter's output, quoted when it fails


@dataclass(frozen=True)
class StoredAdapter:
    """One adapter of a stored model."""

    model: str
    name: str
    path: Path
    source: str
    size: int
    added: datetime | None


def validate_adapter_name(name: str) -> str:
    if not ADAPTER_NAME.match(name):
        raise ModelStoreError(f"{name!r} cannot name an adapter: use {ADAPTER_NAME_RULE}")
    return name


def adapter_name_from(path: Path) -> str:
    """A default adapter name from a file or folder name."""
    stem = path.name.removesuffix(".gguf")
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:64]
    return cleaned or "adapter"


def check_adapter_file(path: Path, base: Path | None) -> None:
    """`ModelStoreError` unless `path` is a LoRA GGUF that fits the model in `base` (same
    architecture, each adapted tensor's shape): llama-server refuses to start with one that does
    not, which would take its model down with it."""
    meta = read_gguf_header(path).metadata
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise ModelStoreError(
            f"{path} is not a LoRA adapter (its GGUF metadata says general.type "
            f"{meta.get('general.type')!r}, adapter.type {meta.get('adapter.type')!r}); convert "
            "a PEFT adapter folder with `hearth adapter add MODEL NAME FOLDER --base CHECKPOINT`"
        )
    if base is None:
        return
    base_header = read_gguf_header(base)
    arch, base_arch = (
        meta.get("general.architecture"),
        base_header.metadata.get("general.architecture"),
    )
    if arch != base_arch:
        raise ModelStoreError(
            f"the adapter {path.name} is for the architecture {arch!r}, its model is {base_arch!r}"
        )
    tensors = {t.name: t for t in base_header.tensors}
    for part in split_parts(base)[1:]:
        tensors |= {t.name: t for t in read_gguf_header(part).tensors}
    _check_shapes(path, read_gguf_header(path).tensors, tensors)


def _check_shapes(path: Path, lora: list[TensorInfo], base: dict[str, TensorInfo]) -> None:
    by_name = {t.name: t for t in lora}
    for name, a in by_name.items():
        if not name.endswith(".lora_a"):
            continue
        target = name.removesuffix(".lora_a")
        b = by_name.get(target + ".lora_b")
        weight = base.get(target)
        if weight is None or b is None:
            raise ModelStoreError(
                f"the adapter {path.name} changes the tensor {target}, which its model does not "
                "have: it was trained for another model"
            )
        # llama.cpp's own check (llama-adapter.cpp): A's rows and B's columns fit the weight.
        if a.shape[0] != weight.shape[0] or b.shape[-1] != weight.shape[-1]:
            raise ModelStoreError(
                f"the adapter {path.name} does not fit its model: {target} is "
                f"{list(weight.shape)} there, the adapter's A and B are {list(a.shape)} and "
                f"{list(b.shape)}; it was trained for another model"
            )


class AdapterStore:
    """The adapters of the models in the store under `models_dir`."""

    def __init__(self, models_dir: Path) -> None:
        self.models = ModelStore(models_dir)
        self.folder = models_dir / "adapters"

    def list(self, model: str | None = None) -> builtins.list[StoredAdapter]:
        """The adapters of `model` (all models' when None), by model and name."""
        folders = [self._folder(model)] if model is not None else self._model_folders()
        found = [
            adapter
            for folder in folders
            if folder.is_dir()
            for path in folder.glob("*.json")
            if (adapter := self._read(path)) is not None
        ]
        return sorted(found, key=lambda a: (a.model.lower(), a.name.lower()))

    def get(self, model: str, name: str) -> StoredAdapter | None:
        if not ADAPTER_NAME.match(name):
            return None
        return self._read(self._folder(model) / f"{name}.json")

    def add(
        self,
        model: str,
        name: str,
        file: Path,
        *,
        source: str | None = None,
        replace: bool = False,
        move: bool = False,
    ) -> StoredAdapter:
        """Attach the LoRA GGUF `file` to the stored `model` as `name` (a copy, or the file itself
        moved in with `move`), checked against the model first."""
        validate_adapter_name(name)
        if model == EMBEDDINGS_MODEL_NAME:
            raise ModelStoreError(f"'{model}' is an embeddings model; adapters change chat models")
        stored = self.models.get(model)  # ModelNotFound naming the models there are
        file = file.expanduser().resolve()
        if not file.is_file():
            raise ModelStoreError(f"{file} does not exist or is not a file; give a LoRA GGUF")
        if self.get(model, name) is not None and not replace:
            raise ModelStoreError(
                f"'{model}' already has an adapter named '{name}'; remove it first with "
                f"`hearth adapter rm {model} {name}`, or pick another name"
            )
        check_adapter_file(file, stored.path if stored.available else None)
        folder = self._folder(model)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{name}.gguf"
        partial = folder / f".{name}.{os.getpid()}.partial"
        try:
            if move:
                file.replace(partial)
            else:
                partial.write_bytes(b"")  # create, then copy in chunks
                with file.open("rb") as src, partial.open("wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            partial.replace(target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ModelStoreError(f"could not store the adapter {file}: {exc}") from None
        adapter = StoredAdapter(
            model, name, target, source or str(file), target.stat().st_size, datetime.now(UTC)
        )
        write_json_atomically(folder / f"{name}.json", _to_json(adapter))
        return adapter

    def remove(self, model: str, name: str) -> StoredAdapter:
        adapter = self.get(model, name)
        if adapter is None:
            names = ", ".join(a.name for a in self.list(model)) or "none"
            raise ModelStoreError(f"'{model}' has no adapter named '{name}'; its adapters: {names}")
        folder = self._folder(model)
        (folder / f"{name}.json").unlink(missing_ok=True)  # first: never a name without a file
        adapter.path.unlink(missing_ok=True)
        _remove_if_empty(folder)
        return adapter

    def remove_all(self, model: str) -> builtins.list[StoredAdapter]:
        """Remove every adapter of `model` (when the model itself is removed)."""
        return [self.remove(model, adapter.name) for adapter in self.list(model)]

    def _folder(self, model: str) -> Path:
        return self.folder / quote(model, safe="")

    def _model_folders(self) -> builtins.list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.is_dir())

    def _read(self, path: Path) -> StoredAdapter | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            added = data.get("added")
            return StoredAdapter(
                model=str(data["model"]),
                name=str(data["name"]),
                path=path.with_name(f"{data['name']}.gguf"),
                source=str(data.get("source") or ""),
                size=int(data.get("size") or 0),
                added=datetime.fromisoformat(added) if added else None,
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelStoreError(
                f"the adapter record {path} is unreadable ({exc}); delete it and add the adapter "
                "again"
            ) from None


def _to_json(adapter: StoredAdapter) -> dict[str, Any]:
    return {
        "model": adapter.model,
        "name": adapter.name,
        "source": adapter.source,
        "size": adapter.size,
        "added": adapter.added.isoformat() if adapter.added else None,
    }


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: other adapters (or a conversion) remain
        folder.rmdir()


# -- converting a PEFT adapter -------------------------------------------------------------------


def is_peft_adapter(folder: Path) -> bool:
    """Whether `folder` holds a PEFT adapter (what `hearth convert` hands to `convert_adapter`)."""
    return (folder / "adapter_config.json").is_file()


def convert_adapter(
    folder: Path,
    base: str | Path | None,
    settings: Settings,
    progress: Progress | None = None,
    *,
    script: Path,
    name: str | None = None,
    model: str | None = None,
    outtype: str = "f16",
    replace: bool = False,
) -> StoredAdapter:
    """Convert the PEFT adapter in `folder` to a LoRA GGUF and attach it to a stored model.

    `base` is the model it was trained on: a stored model's name (then the adapter is attached
    to it), or the Hugging Face checkpoint folder (only its config.json is read); None takes
    the adapter's own `base_model_name_or_path`. `model` names the stored model to attach it to
    when that is not the base itself (by default: the stored base, or the stored model converted
    from the checkpoint folder); given without a base, the folder `model` was converted from is
    the checkpoint. `name` defaults to the folder's name. `script` is llama.cpp's
    convert_lora_to_gguf.py, which the caller finds (`conversion_script(settings.tools_dir,
    CONVERT_LORA_SCRIPT)` in engines/llama_cpp/locate.py, a layer above this one). Nothing is
    registered unless the conversion completed: the GGUF is written to a partial file first."""
    say = progress or (lambda line: None)
    folder = folder.expanduser().resolve()
    if not is_peft_adapter(folder):
        raise ModelStoreError(f"{folder} has no adapter_config.json: it is not a PEFT adapter")
    name = validate_adapter_name(name or adapter_name_from(folder))
    store = ModelStore(settings.models_dir)
    checkpoint, attach_to = _base_of(folder, base, store, model)
    adapters = AdapterStore(settings.models_dir)
    if adapters.get(attach_to, name) is not None and not replace:
        raise ModelStoreError(
            f"'{attach_to}' already has an adapter named '{name}'; remove it first with "
            f"`hearth adapter rm {attach_to} {name}`, or pick another name"
        )
    if not script.is_file():
        raise SetupError(f"{script} is missing: `hearth setup` puts llama.cpp's converters there")
    work = adapters._folder(attach_to)
    work.mkdir(parents=True, exist_ok=True)
    partial = work / f".{name}.{os.getpid()}.converting.gguf"
    argv = [sys.executable, str(script), str(folder), "--base", str(checkpoint)]
    argv += ["--outfile", str(partial), "--outtype", outtype]
    say(f"converting {folder} (base {checkpoint}) to a LoRA GGUF ({outtype})")
    try:
        _run_converter(argv, say)
        say(f"attaching it to {attach_to} as {name}")
        return adapters.add(
            attach_to, name, partial, source=str(folder), move=True, replace=replace
        )
    finally:
        partial.unlink(missing_ok=True)
        _remove_if_empty(work)


def _base_of(
    folder: Path, base: str | Path | None, store: ModelStore, model: str | None
) -> tuple[Path, str]:
    """(the checkpoint folder whose config.json the converter reads, the stored model to attach
    the adapter to)."""
    declared = _declared_base(folder)
    if base is None and model is not None:
        store.get(model)  # ModelNotFound naming the models there are
        return _checkpoint(store, model, declared), model
    if base is None:
        if declared is None:
            raise ModelStoreError(
                f"{folder}/adapter_config.json names no base model; give the base: a stored "
                "model or the checkpoint folder it was trained on"
            )
        base = declared
    if isinstance(base, str) and base in store:
        attach_to = model or base
        store.get(attach_to)
        return _checkpoint(store, base, declared), attach_to
    checkpoint = _local_checkpoint(str(base))
    if checkpoint is None:
        raise ModelStoreError(
            f"the base {str(base)!r} is neither a stored model (see `hearth ls`) nor a folder "
            "with a Hugging Face config.json; give the checkpoint folder the adapter was "
            "trained on"
        )
    if model is not None:
        store.get(model)
        return checkpoint, model
    converted = [m.name for m in store.list() if _same_folder(m.source, checkpoint)]
    if len(converted) != 1:
        found = f" ({', '.join(converted)})" if converted else ""
        raise ModelStoreError(
            f"name the stored model to attach the adapter to: {len(converted)} stored models "
            f"were converted from {checkpoint}{found}"
        )
    return checkpoint, converted[0]


def _checkpoint(store: ModelStore, model: str, declared: str | None) -> Path:
    """The checkpoint folder of a stored model: the one it was converted from, else the
    adapter's declared base when that is a local folder."""
    found = _local_checkpoint(store.get(model).source) or _local_checkpoint(declared)
    if found is None:
        raise ModelStoreError(
            "converting needs the Hugging Face checkpoint the adapter was trained on (only its "
            f"config.json): neither the source of '{model}' nor the adapter's "
            f"base_model_name_or_path ({declared!r}) is such a folder; give that folder as the "
            "base (`--base FOLDER`)"
        )
    return found


def _declared_base(folder: Path) -> str | None:
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelStoreError(f"{folder}/adapter_config.json is unreadable: {exc}") from None
    declared = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    return declared if isinstance(declared, str) and declared else None


def _local_checkpoint(path: str | None) -> Path | None:
    if path is None:
        return None
    folder = Path(path).expanduser()
    return folder.resolve() if (folder / "config.json").is_file() else None


def _same_folder(source: str, folder: Path) -> bool:
    try:
        return Path(source).expanduser().resolve() == folder
    except (OSError, ValueError):
        return False


def _run_converter(argv: list[str], say: Progress) -> None:
    tail: deque[str] = deque(maxlen=_LOG_LINES)
    try:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise ModelStoreError(f"could not run {argv[1]}: {exc}") from None
    with process:
        try:
            assert process.stdout is not None
            for line in process.stdout:
                line = line.rstrip()
                if line:
                    tail.append(line)
                    say(line)
            code = process.wait(timeout=CONVERT_TIMEOUT)
        except BaseException:
            process.kill()
            raise
    if code != 0:
        raise ModelStoreError(f"{Path(argv[1]).name} failed (exit {code}):\n" + "\n".join(tail))
