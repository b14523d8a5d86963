"""Models Hearth makes from others (`hearth convert`, `hearth quantize`): written into a staging
folder beside the store's, moved into place and registered only once complete, so an
interrupted or failed run leaves no file and no name behind.

Layout under `<models_dir>`:
    converted/<quoted name>/<file>.gguf     made by `hearth convert`
    quantized/<quoted name>/<file>.gguf     made by `hearth quantize`
    <kind>/.staging-<pid>-<random>/         work in progress, deleted when the run ends (and,
                                            if Hearth was killed, by the next run of either)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from hearth.models.store import ModelStore, StoredModel

DerivedKind = Literal["converted", "quantized"]
_STAGING = re.compile(r"^\.staging-(?P<pid>\d+)-")


def file_stem(name: str) -> str:
    """A file name for a model name: `owner/repo:Q4_K_M` → `repo-Q4_K_M`."""
    last = name.rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip("-.") or "model"


@contextmanager
def staging(store: ModelStore, kind: DerivedKind) -> Iterator[Path]:
    """A fresh folder to write into, deleted with whatever is left in it when the block ends
    (normally or not)."""
    parent = store.models_dir / kind
    parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(parent)
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=f".staging-{os.getpid()}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def register_derived(
    store: ModelStore, staged: Path, *, name: str, kind: DerivedKind, source: str
) -> StoredModel:
    """Move a complete file from the staging folder into place and register it as `name`; if
    registering fails, the file is deleted again. A file already at that place belongs to no
    model (the name is free) and is replaced."""
    store.check_name_free(name)
    target = store.models_dir / kind / quote(name, safe="") / f"{file_stem(name)}.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    staged.replace(target)
    model = StoredModel(
        name=name,
        kind=kind,
        source=source,
        files=(target,),
        copied=True,
        size=target.stat().st_size,
        added=datetime.now(UTC),
    )
    try:
        return store.register(model)
    except BaseException:
        target.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            target.parent.rmdir()
        raise


def _remove_abandoned(parent: Path) -> None:
    """Staging folders of runs whose process is gone (killed before it could clean up)."""
    for folder in parent.glob(".staging-*"):
        match = _STAGING.match(folder.name)
        if match is not None and not _alive(int(match["pid"])):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
