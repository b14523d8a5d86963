"""`hearth convert | quantize`: Hugging Face checkpoints into GGUF, and GGUF models into smaller
quantizations, each registered in the store as a new model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from hearth.cli.create import reload_running_server
from hearth.cli.options import settings_from, settings_options
from hearth.cli.output import DownloadProgress, human_size, run_store_action
from hearth.config import Settings
from hearth.engines.llama_cpp.build import ensure_llama_server
from hearth.engines.llama_cpp.locate import (
    CONVERT_HF_SCRIPT,
    CONVERT_LORA_SCRIPT,
    QUANTIZE_BINARY_NAME,
    conversion_script,
    tools_binary,
)
from hearth.models.adapters import convert_adapter, is_peft_adapter
from hearth.models.convert import (
    DEFAULT_OUTTYPE,
    OUTTYPES,
    Checkpoint,
    convert_checkpoint,
    download_checkpoint,
    local_checkpoint,
    remove_download,
    resolve_source,
)
from hearth.models.quantize import quantization_types
from hearth.models.quantize import quantize as quantize_model
from hearth.models.store import ModelStore, StoredModel

INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C


@click.command()
@click.argument("source")
@click.option("--name", help="Register under this name.  [default: FOLDER:TYPE or owner/repo:TYPE]")
@click.option(
    "--outtype", type=click.Choice(OUTTYPES, case_sensitive=False), default=DEFAULT_OUTTYPE,
    show_default=True,
    help="The GGUF's weight type; auto keeps the checkpoint's 16-bit type (bf16 stays bf16).",
)  # fmt: skip
@click.option(
    "--base", metavar="MODEL|FOLDER",
    help="For a LoRA adapter: the stored model or checkpoint folder it was trained on.  "
    "[default: the adapter's base_model_name_or_path]",
)  # fmt: skip
@settings_options
def convert(
    source: str,
    name: str | None,
    outtype: str,
    base: str | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Convert a Hugging Face checkpoint into a stored GGUF model.

    \b
    SOURCE is one of:
      PATH          a checkpoint folder: config.json, tokenizer files, *.safetensors
      owner/repo    a checkpoint on the Hugging Face Hub (downloaded, converted, then deleted)

    llama.cpp's convert_hf_to_gguf.py (from the same sources as llama-server) does the work; it
    needs torch, transformers and sentencepiece: pip install 'hearth-gateway[transformers]'.
    Quantize the result with `hearth quantize`. A folder with adapter_config.json is a PEFT
    LoRA adapter: it is converted with convert_lora_to_gguf.py and attached to the model it was
    trained on (--base; see `hearth adapter`).
    """
    settings = settings_from(config_file, data_dir=data_dir)
    store = ModelStore(settings.models_dir)
    console = Console(stderr=True)
    resolved = run_store_action(lambda: resolve_source(source))
    with _interruptible(console):
        if isinstance(resolved, Path):
            if is_peft_adapter(resolved):
                _convert_adapter(resolved, base, name, outtype, settings, console)
                return
            checkpoint = run_store_action(lambda: local_checkpoint(resolved))
        else:
            with DownloadProgress(console) as downloading:
                checkpoint = run_store_action(
                    lambda: download_checkpoint(resolved, store, progress=downloading)
                )
            if is_peft_adapter(checkpoint.folder):
                _convert_adapter(checkpoint.folder, base, name, outtype, settings, console)
                remove_download(store, checkpoint)
                return
        script = _tool(settings, console, conversion_script(settings.tools_dir, CONVERT_HF_SCRIPT))
        model = _convert(checkpoint, store, script, name, outtype, console)
        if not isinstance(resolved, Path):
            remove_download(store, checkpoint)  # converted: the download is not needed
    _done(model, console, settings)


@click.command(name="quantize")
@click.argument("name", required=False)
@click.argument("qtype", metavar="TYPE", required=False)
@click.option("--name", "new_name", help="Register under this name.  [default: NAME:TYPE]")
@click.option(
    "--imatrix", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An importance matrix (llama-imatrix's output) to guide the quantization.",
)  # fmt: skip
@click.option(
    "--allow-requantize", is_flag=True,
    help="Quantize weights that are quantized already (quality suffers).",
)  # fmt: skip
@click.option("--list-types", is_flag=True, help="List the types llama-quantize offers.")
@settings_options
def quantize_(
    name: str | None,
    qtype: str | None,
    new_name: str | None,
    imatrix: Path | None,
    allow_requantize: bool,
    list_types: bool,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Quantize a stored model with llama.cpp's llama-quantize into a new stored model.

    \b
    hearth quantize tiny:F16 Q4_K_M            → tiny:Q4_K_M
    hearth quantize tiny:F16 q8_0 --name fast  → fast
    hearth quantize --list-types               the types (TYPE is case-insensitive)

    Quantize from F16, BF16 or F32 weights: an already quantized model (such as anything pulled
    as Q4_K_M) needs --allow-requantize and loses more quality.
    """
    settings = settings_from(config_file, data_dir=data_dir)
    console = Console(stderr=True)
    binary = _tool(settings, console, tools_binary(settings.tools_dir, QUANTIZE_BINARY_NAME))
    if list_types:
        _print_types(run_store_action(lambda: quantization_types(binary)))
        return
    if name is None or qtype is None:
        raise click.UsageError("give the model's NAME and the TYPE to quantize it to")
    store = ModelStore(settings.models_dir)
    with _interruptible(console), _Stages(console) as stages:

        def progress(index: int, count: int, tensor: str) -> None:
            stages(f"quantizing {name} to {qtype.upper()}", index, count, tensor)

        model = run_store_action(
            lambda: quantize_model(
                store, name, qtype, binary, new_name=new_name, imatrix=imatrix,
                allow_requantize=allow_requantize, progress=progress,
            )
        )  # fmt: skip
    _done(model, console, settings)


def _convert(
    checkpoint: Checkpoint,
    store: ModelStore,
    script: Path,
    name: str | None,
    outtype: str,
    console: Console,
) -> StoredModel:
    with _Stages(console) as stages:

        def progress(stage: str, done: int | None, total: int | None) -> None:
            stages(stage, done, total)

        model: StoredModel = run_store_action(
            lambda: convert_checkpoint(
                checkpoint, store, script, name=name, outtype=outtype, progress=progress
            )
        )
    return model


def _convert_adapter(
    folder: Path,
    base: str | None,
    name: str | None,
    outtype: str,
    settings: Settings,
    console: Console,
) -> None:
    """A PEFT adapter folder: converted to a LoRA GGUF and attached to its base model by
    models/adapters.py (see `hearth adapter add`)."""
    script = _tool(settings, console, conversion_script(settings.tools_dir, CONVERT_LORA_SCRIPT))

    def say(line: str) -> None:  # its stages and warnings, not the converter's every tensor
        if not line.startswith(("INFO:", "Writing:")):
            console.print(line, markup=False, highlight=False)

    stored = run_store_action(
        lambda: convert_adapter(
            folder, base, settings, say, script=script, name=name, outtype=outtype
        )
    )
    console.print(
        f"[green]✓[/] attached {stored.name} to {stored.model}; ask for it as the model "
        f"'{stored.model}+{stored.name}'"
    )
    console.print(reload_running_server(settings))


def _tool(settings: Settings, console: Console, path: Path) -> Path:
    """llama.cpp's tool at `path` in the tools folder, built first (with llama-server) if the
    cache lacks it, as when llama-server came from PATH or a setting."""
    if path.is_file():
        return path
    console.print(f"{path.name} is not in {settings.tools_dir}; building llama.cpp's tools")
    with _Stages(console) as stages:

        def report(stage: str, percent: int | None) -> None:
            stages(f"llama.cpp build: {stage}", percent, 100 if percent is not None else None)

        run_store_action(lambda: ensure_llama_server(settings.tools_dir, progress=report))
    if not path.is_file():
        raise click.ClickException(f"the build finished but {path} is missing")
    return path


def _done(model: StoredModel, console: Console, settings: Settings) -> None:
    console.print(f"[green]✓[/] {model.name} ({human_size(model.size)}) at {model.path}")
    console.print(f"  {model.kind} from {model.source}")
    console.print(reload_running_server(settings))


def _print_types(types: dict[str, str]) -> None:
    table = Table()
    table.add_column("type")
    table.add_column("llama-quantize says")
    for name, description in types.items():
        table.add_row(name, description)
    Console().print(table)


@contextmanager
def _interruptible(console: Console) -> Iterator[None]:
    """Ctrl-C: the child has been stopped and its files removed on the way out; say so and exit
    130 instead of click's bare 'Aborted!'."""
    try:
        yield
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: nothing was registered")
        raise SystemExit(INTERRUPTED) from None


class _Stages:
    """Progress through named stages: a spinner and a bar (when the stage can be counted) on a
    terminal; a line per stage otherwise (logs, CI)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.task: TaskID | None = None
        self.stage = ""

    def __enter__(self) -> _Stages:
        if self.live:
            self.progress.start()
            self.task = self.progress.add_task("starting", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def __call__(
        self, stage: str, done: int | None, total: int | None, detail: str | None = None
    ) -> None:
        if self.live and self.task is not None:
            text = f"{stage} ({detail})" if detail else stage
            self.progress.update(self.task, description=text, completed=done or 0, total=total)
            return
        head = stage.split(" (", 1)[0]
        if head != self.stage:
            self.stage = head
            self.console.print(head)
