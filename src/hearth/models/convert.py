"""Hugging Face checkpoints (a folder of config, tokenizer and safetensors weights, or a Hub
repository of one) converted into stored GGUF models with `convert_hf_to_gguf.py` from the pinned
llama.cpp tree, run as a child process of this Python (which needs torch, transformers and
sentencepiece: the `transformers` extra).

The script writes into a staging folder (see `derived`); the model is registered only when it
has finished. A Hub checkpoint is downloaded into `<models_dir>/checkpoints/<owner>/<repo>/` with
the pull machinery (resumable, checked against the hub's sha256) and deleted once converted; a
download that was interrupted is kept and resumed by the next `hearth convert` of that repo.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx
from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

from hearth.errors import ModelStoreError, PullError, SetupError
from hearth.models.derived import register_derived, staging
from hearth.models.gguf_info import read_gguf_info
from hearth.models.hub_ref import HubRef, parse_ref
from hearth.models.pull import HubSettings, Progress, fetch_file, file_url, list_files
from hearth.models.store import ModelStore, StoredModel, inside, name_from_file, validate_name
from hearth.models.tool_run import run_tool

# What `--outtype` may be: the script's own choices, less the ternary types (tq1_0, tq2_0), which
# only suit models trained ternary. auto: the checkpoint's own 16-bit type (bf16 stays bf16).
OUTTYPES = ("f16", "bf16", "f32", "q8_0", "auto")
DEFAULT_OUTTYPE = "f16"
INSTALL_HINT = "pip install 'hearth-gateway[transformers]'"
ADAPTER_CONFIG = "adapter_config.json"
# The files of a Hub checkpoint that conversion reads (top level only): config, tokenizer and
# chat template files, and the safetensors weights with their index.
_CHECKPOINT_FILES = re.compile(
    r"^(?:[^/]+\.(?:json|safetensors|txt|jinja|tiktoken)|tokenizer\.model)$", re.IGNORECASE
)

# (stage, done, total): the stage in words; done/total when it can be counted, else None.
ConvertProgress = Callable[[str, int | None, int | None], None]


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder ready to convert, and how its model is described and named."""

    folder: Path
    # The manifest's source: the folder's path (as an imported model's is its file's; adapters
    # find the checkpoint of a converted model by it), or "owner/repo (Hugging Face Hub, <rev>)".
    source: str
    default_name: str  # without the :TAG


def resolve_source(source: str) -> Path | HubRef:
    """A local folder (when one exists at `source`) or a Hub repository `owner/repo`."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        hint = (
            "; it is a GGUF already: register it with `hearth import`"
            if path.suffix.lower() == ".gguf"
            else ""
        )
        raise ModelStoreError(
            f"{source} is a file; give the checkpoint's folder (config.json, tokenizer and "
            f"*.safetensors weights){hint}"
        )
    try:
        ref = parse_ref(source)
    except PullError:
        ref = None
    if ref is None or ref.tag is not None or ref.filename is not None:
        raise ModelStoreError(
            f"there is no folder {source}, and it is not a Hugging Face repository (owner/repo); "
            "give a checkpoint folder or owner/repo"
        )
    return ref


def local_checkpoint(folder: Path) -> Checkpoint:
    check_checkpoint(folder)
    return Checkpoint(folder, str(folder), name_from_file(Path(folder.name + ".gguf")))


def check_checkpoint(folder: Path) -> None:
    """`ModelStoreError` saying what is missing unless `folder` looks like a checkpoint that
    `convert_hf_to_gguf.py` reads: config.json and safetensors (or PyTorch .bin) weights."""
    config = folder / "config.json"
    if not config.is_file():
        ggufs = sorted(folder.glob("*.gguf"))
        hint = (
            f"; it holds {ggufs[0].name}, a GGUF already: register it with `hearth import`"
            if ggufs
            else ""
        )
        raise ModelStoreError(
            f"{folder} is not a Hugging Face checkpoint folder: it has no config.json{hint}"
        )
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelStoreError(f"{config} is not readable JSON ({exc})") from None
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise ModelStoreError(
            f"{folder} has no model weights (*.safetensors or pytorch_model*.bin) beside its "
            "config.json"
        )


def missing_packages(folder: Path) -> list[str]:
    """The Python packages the conversion needs that this interpreter lacks."""
    needed = ["torch", "transformers"]
    if (folder / "tokenizer.model").is_file():  # a SentencePiece tokenizer
        needed.append("sentencepiece")
    return [name for name in needed if importlib.util.find_spec(name) is None]


def check_packages(folder: Path) -> None:
    missing = missing_packages(folder)
    if missing:
        raise SetupError(
            f"converting a checkpoint needs the Python package{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}, not installed in {sys.prefix}: {INSTALL_HINT}"
        )


def convert_checkpoint(
    checkpoint: Checkpoint,
    store: ModelStore,
    script: Path,
    *,
    name: str | None = None,
    outtype: str = DEFAULT_OUTTYPE,
    progress: ConvertProgress | None = None,
) -> StoredModel:
    """Convert `checkpoint` with `script` (convert_hf_to_gguf.py) and register the GGUF as `name`
    (default: `<default_name>:<TYPE>`, TYPE the output type: F16, BF16, F32 or Q8_0)."""
    outtype = outtype.lower()
    if outtype not in OUTTYPES:
        raise ModelStoreError(f"--outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    check_checkpoint(checkpoint.folder)
    check_packages(checkpoint.folder)
    if not script.is_file():
        raise SetupError(f"{script} is missing; run `hearth setup` to install llama.cpp's tools")
    if name is not None:
        store.check_name_free(validate_name(name))
    elif outtype != "auto":
        name = validate_name(f"{checkpoint.default_name}:{outtype.upper()}")
        store.check_name_free(name)
    report = progress or _no_progress
    with staging(store, "converted") as work:
        out = work / "model.gguf"
        output = _ScriptOutput(report)
        argv = [sys.executable, str(script), str(checkpoint.folder), "--outfile", str(out)]
        report("starting convert_hf_to_gguf.py", None, None)
        result = run_tool(
            [*argv, "--outtype", outtype], output.line, cwd=work, env={"PYTHONUNBUFFERED": "1"}
        )
        if result.returncode != 0 or not out.is_file():
            raise output.failure(checkpoint, result.returncode, result.tail)
        written = read_gguf_info(out).quantization or outtype.upper()
        if name is None:
            name = validate_name(f"{checkpoint.default_name}:{written}")
        report("registering", None, None)
        return register_derived(
            store,
            out,
            name=name,
            kind="converted",
            source=checkpoint.source,
        )


def download_checkpoint(
    ref: HubRef,
    store: ModelStore,
    *,
    hub: HubSettings | None = None,
    progress: Progress | None = None,
) -> Checkpoint:
    """Fetch the files of a Hub checkpoint that conversion reads into
    `<models_dir>/checkpoints/<owner>/<repo>/` (resumable, verified; files already there and
    verified are kept)."""
    hub = hub or HubSettings.from_environment()
    if hub.offline:
        raise PullError(
            f"cannot download {ref.repo_id}: Hugging Face Hub offline mode is on (HF_HUB_OFFLINE); "
            "convert a checkpoint folder you have instead"
        )
    files, revision = list_files(ref, hub)
    wanted = [f for f in files if _CHECKPOINT_FILES.match(f.name)]
    if not any(f.name.lower().endswith(".safetensors") for f in wanted):
        ggufs = [f for f in files if PurePosixPath(f.name).suffix.lower() == ".gguf"]
        hint = (
            f"; it holds GGUF files: `hearth pull {ref.repo_id}` downloads one"
            if ggufs
            else "; Hearth converts safetensors checkpoints"
        )
        raise ModelStoreError(f"{ref.repo_id} has no *.safetensors weights at its top level{hint}")
    if not any(f.name in ("config.json", ADAPTER_CONFIG) for f in wanted):
        raise ModelStoreError(
            f"{ref.repo_id} has no config.json: it is not a Hugging Face checkpoint"
        )
    folder = checkpoint_folder(store, ref.repo_id)
    if not inside(folder, store.models_dir):
        raise PullError(f"{folder} lies outside {store.models_dir}; nothing was downloaded")
    with httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(60.0, connect=15.0),
        headers=build_hf_headers(token=hub.token),
    ) as client:
        for file in wanted:
            url = file_url(hub, ref.repo_id, file.name, revision)
            fetch_file(client, url, folder / file.name, file, progress)
    return Checkpoint(
        folder, f"{ref.repo_id} (Hugging Face Hub, {revision})", validate_name(ref.repo_id)
    )


def checkpoint_folder(store: ModelStore, repo_id: str) -> Path:
    return store.models_dir / "checkpoints" / repo_id


def remove_download(store: ModelStore, checkpoint: Checkpoint) -> None:
    """Delete a downloaded checkpoint once converted (only ever under checkpoints/)."""
    root = store.models_dir / "checkpoints"
    if inside(checkpoint.folder, root) and checkpoint.folder.resolve() != root.resolve():
        shutil.rmtree(checkpoint.folder, ignore_errors=True)
        for parent in (checkpoint.folder.parent, root):
            try:
                parent.rmdir()
            except OSError:
                break


def _no_progress(stage: str, done: int | None, total: int | None) -> None:
    pass


_TENSOR = re.compile(r"^INFO:hf-to-gguf:(?P<tensor>[\w.]+),\s+\S+\s+-->\s+(?P<type>\w+), shape")
_ARCHITECTURE = re.compile(r"Model architecture: (?P<arch>\S+)")
_PLANNED = re.compile(r"n_tensors = (?P<count>\d+), total_size = (?P<size>\S+)")
_WRITING = re.compile(r"^Writing:\s+(?P<percent>\d+)%")
_NO_MODULE = re.compile(r"ModuleNotFoundError: No module named '(?P<module>[\w.]+)'")
_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?(?P<kind>\w+(?:Error|Exception)): (?P<message>.+)$")


class _ScriptOutput:
    """Reads convert_hf_to_gguf.py's log: the progress it shows, and why it failed."""

    def __init__(self, progress: ConvertProgress) -> None:
        self.progress = progress
        self.tensors = 0
        self.errors: list[str] = []
        self.exception: str | None = None
        self.missing_module: str | None = None

    def line(self, line: str) -> None:
        if match := _TENSOR.match(line):
            self.tensors += 1
            self.progress(f"converting tensors ({match['tensor']})", self.tensors, None)
        elif match := _WRITING.match(line):
            self.progress("writing the GGUF file", int(match["percent"]), 100)
        elif match := _ARCHITECTURE.search(line):
            self.progress(f"reading the checkpoint ({match['arch']})", None, None)
        elif match := _PLANNED.search(line):
            self.progress(f"writing {match['count']} tensors ({match['size']}B)", 0, 100)
        elif line.startswith("ERROR:"):
            self.errors.append(line.split(":", 2)[-1].strip())
        elif match := _NO_MODULE.search(line):
            self.missing_module = match["module"]
        elif match := _EXCEPTION.match(line):
            self.exception = f"{match['kind']}: {match['message']}"

    def failure(self, checkpoint: Checkpoint, code: int, tail: tuple[str, ...]) -> Exception:
        script = "convert_hf_to_gguf.py"
        if self.missing_module is not None:
            return SetupError(
                f"{script} needs the Python package {self.missing_module.split('.')[0]}, which "
                f"is not installed in {sys.prefix}: {INSTALL_HINT}"
            )
        why = "; ".join(self.errors) or self.exception or (tail[-1] if tail else "no output")
        hint = ""
        if any("is not supported" in error for error in self.errors):
            hint = (
                ". The llama.cpp version Hearth pins cannot convert this architecture "
                f"(`python {script} --print-supported-models` lists those it can)"
            )
        return ModelStoreError(
            f"{script} could not convert {checkpoint.source} (exit {code}): {why}{hint}"
        )
