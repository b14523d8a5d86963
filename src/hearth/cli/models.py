"""`hearth pull | import | ls | show | rm`: the model store from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from hearth.cli.create import reload_running_server
from hearth.cli.options import settings_from, settings_options
from hearth.cli.running import server_url
from hearth.cli.search import machine_target
from hearth.config import Settings
from hearth.engines.prompt_cache import PromptCache
from hearth.errors import HearthError
from hearth.models.bundled import BUNDLED_MODEL_NAME, BUNDLED_TEMPLATE
from hearth.models.gguf_info import GGUFInfo, memory_breakdown, parameter_size, read_gguf_info
from hearth.models.presets import Preset, PresetStore
from hearth.models.pull import pull as pull_model
from hearth.models.search import library_name_message
from hearth.models.store import ModelStore, StoredModel

LOADED_TIMEOUT = 1.0


@click.command()
@click.argument("ref")
@click.option("--name", help="Register under this name.  [default: owner/repo:QUANT]")
@click.option("--quant", help="This quantization (e.g. Q8_0), whatever fits.")
@settings_options
def pull(
    ref: str, name: str | None, quant: str | None, config_file: Path | None, data_dir: Path | None
) -> None:
    """Download a GGUF model from the Hugging Face Hub.

    \b
    REF is one of:
      owner/repo              the largest quantization that fits this machine (see search)
      owner/repo:Q5_K_M       that quantization
      owner/repo/file.gguf    that exact file (all parts, for a split model)

    An interrupted download resumes when pulled again; every file is checked against the sha256
    the hub publishes. HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE are honoured.
    """
    settings = settings_from(config_file, data_dir=data_dir)
    store = ModelStore(settings.models_dir)
    console = Console(stderr=True)
    if "/" not in ref and (message := library_name_message(ref)) is not None:
        raise click.ClickException(message)
    target = machine_target(settings)
    with _DownloadProgress(console) as progress:
        model = _run(
            lambda: pull_model(
                ref, store, name=name, progress=progress, quant=quant, fit=target,
                explain=lambda reason: console.print(reason),
            )
        )  # fmt: skip
    console.print(f"[green]✓[/] {model.name} ({_size(model.size)}) at {model.path}")


@click.command(name="import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Register under this name.  [default: the file's stem]")
@click.option(
    "--reference", is_flag=True,
    help="Use the file where it is instead of copying it into the data folder.",
)  # fmt: skip
@settings_options
def import_(
    path: Path, name: str | None, reference: bool, config_file: Path | None, data_dir: Path | None
) -> None:
    """Register a local GGUF file (the first part, for a split model). It is copied into the
    data folder unless --reference is given, in which case it must stay where it is."""
    settings = settings_from(config_file, data_dir=data_dir)
    store = ModelStore(settings.models_dir)
    model = _run(lambda: store.import_file(path, name=name, copy=not reference))
    how = "copied to" if model.copied else "referenced at"
    click.echo(f"imported {model.name} ({_size(model.size)}), {how} {model.path}")


@click.command(name="ls")
@settings_options
def ls(config_file: Path | None, data_dir: Path | None) -> None:
    """List the models in the store."""
    settings = settings_from(config_file, data_dir=data_dir)
    store = ModelStore(settings.models_dir)
    models = _run(store.list)
    loaded = loaded_models(settings) or set()
    table = Table()
    for column in ("name", "size", "quant", "params", "context", "capabilities", "loaded"):
        table.add_column(column, overflow="fold")
    notes = []
    for model in models:
        info = _info(model)
        if info is None:
            notes.append(_missing_note(model))
        table.add_row(
            model.name,
            _size(model.size) if model.available else "missing",
            _or_dash(info.quantization if info else None),
            parameter_size(info.parameter_count if info else None) or "-",
            _or_dash(info.context_length if info else None),
            ", ".join(info.capabilities) if info else "-",
            "yes" if model.name in loaded else "no",
        )
    for preset in _run(PresetStore(settings.models_dir).list):
        loaded_base = "yes (its base)" if preset.base in loaded else "no"
        table.add_row(preset.name, "preset", "-", "-", "-", f"from {preset.base}", loaded_base)
    console = Console()
    console.print(table)
    for note in notes:
        console.print(note)


@click.command()
@click.argument("name")
@settings_options
def show(name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Show what a model's GGUF metadata says and the memory it needs at the configured
    engine.ctx_size and engine.parallel."""
    settings = settings_from(config_file, data_dir=data_dir)
    preset = _run(lambda: PresetStore(settings.models_dir).get(name))
    if preset is not None:
        _show_preset(preset)
        return
    model = _run(lambda: ModelStore(settings.models_dir).get(name))
    rows: list[tuple[str, Any]] = [
        ("name", model.name),
        ("source", model.source),
        ("file" if len(model.files) == 1 else "files", "\n".join(str(f) for f in model.files)),
        ("stored", "copy in the data folder" if model.copied else "referenced (not copied)"),
        ("size", _size(model.size) if model.available else "missing"),
        ("added", model.added.strftime("%Y-%m-%d %H:%M UTC") if model.added else "-"),
        ("loaded", "yes" if model.name in (loaded_models(settings) or set()) else "no"),
    ]
    info = _run(lambda: read_gguf_info(model.path)) if model.available else None
    if info is not None:
        rows += _info_rows(model, info, settings)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, _or_dash(value))
    console = Console()
    console.print(table)
    if info is None:
        console.print(_missing_note(model))


@click.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove it even while a running server has it loaded.")
@settings_options
def rm(name: str, force: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Remove a model: forget it and delete the files Hearth downloaded or copied (a referenced
    file is left where it is) and its saved prompt caches."""
    settings = settings_from(config_file, data_dir=data_dir)
    presets = PresetStore(settings.models_dir)
    if _run(lambda: name in presets):
        preset = _run(lambda: presets.remove(name))
        click.echo(f"removed the preset {preset.name} (its base {preset.base} is kept)")
        click.echo(reload_running_server(settings))
        return
    store = ModelStore(settings.models_dir)
    _run(lambda: store.get(name))
    users = _run(lambda: presets.users_of(name))
    if users:
        raise click.ClickException(
            f"the preset{'s' if len(users) > 1 else ''} {', '.join(users)} "
            f"{'are' if len(users) > 1 else 'is'} built on {name}; remove "
            f"{'them' if len(users) > 1 else 'it'} first with `hearth rm {users[0]}`"
        )
    if not force and name != BUNDLED_MODEL_NAME and name in (loaded_models(settings) or set()):
        raise click.ClickException(
            f"{name} is loaded by the server at {server_url(settings)}; unload it first with "
            f"`hearth unload {name}`, or pass --force to remove it anyway"
        )
    model = _run(lambda: store.remove(name))
    PromptCache(settings.prompt_cache_dir, settings.prompt_cache_max).remove_model(name)
    kept = "" if model.copied else f" (the file {model.path} was left in place)"
    click.echo(f"removed {model.name}{kept}")


def _show_preset(preset: Preset) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    parameters = "\n".join(f"{k} {v!r}" for k, v in preset.parameters.items())
    template = f"{len(preset.template)} characters" if preset.template else None
    added = preset.added.strftime("%Y-%m-%d %H:%M UTC") if preset.added else None
    for key, value in (
        ("name", preset.name),
        ("kind", "preset (shares its base model's engine)"),
        ("from", preset.base),
        ("system", preset.system),
        ("parameters", parameters),
        ("template", template),
        ("added", added),
    ):
        table.add_row(key, _or_dash(value))
    Console().print(table)


def loaded_models(settings: Settings) -> set[str] | None:
    """Names the running server has loaded, or None when no server answers (nothing loaded)."""
    try:
        response = httpx.get(
            f"{server_url(settings)}/admin/models/loaded", timeout=LOADED_TIMEOUT, trust_env=False
        )
        response.raise_for_status()
        data = response.json().get("data", [])
        return {str(item["name"]) for item in data if isinstance(item, dict) and "name" in item}
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def _info_rows(model: StoredModel, info: GGUFInfo, settings: Settings) -> list[tuple[str, Any]]:
    ctx, parallel = settings.engine.ctx_size, settings.engine.parallel
    memory = memory_breakdown(info, model.size or 0, ctx, parallel)
    template = f"yes ({len(info.chat_template)} characters)" if info.chat_template else "no"
    if not info.chat_template and model.name == BUNDLED_MODEL_NAME:
        template = f"no (Hearth supplies its {BUNDLED_TEMPLATE} template)"
    heads = f"{_or_dash(info.head_count)} (KV heads: {_or_dash(info.head_count_kv)})"
    return [
        ("architecture", info.architecture),
        ("model name", info.name),
        ("parameters", parameter_size(info.parameter_count) or "-"),
        ("quantization", info.quantization),
        ("context length", info.context_length and f"{info.context_length} tokens (trained)"),
        ("layers", info.block_count),
        ("embedding length", info.embedding_length),
        ("attention heads", heads),
        ("key/value length", f"{_or_dash(info.key_length)} / {_or_dash(info.value_length)}"),
        ("vocabulary", info.vocab_size),
        ("pooling", info.pooling_type),
        ("capabilities", ", ".join(info.capabilities)),
        ("chat template", template),
        ("split parts", info.split_count if info.split_count > 1 else None),
        (
            "estimated memory",
            f"{_size(memory.total)} at ctx_size {ctx}, {parallel} slots "
            f"(weights {_size(memory.weights)} + KV cache {_size(memory.kv_cache)} "
            f"+ compute {_size(memory.compute)})",
        ),
    ]


def _info(model: StoredModel) -> GGUFInfo | None:
    if not model.available:
        return None
    try:
        return read_gguf_info(model.path)
    except HearthError:
        return None


def _missing_note(model: StoredModel) -> str:
    if model.kind == "bundled":
        return (
            f"{model.name}: not prepared yet; it is assembled on the first `hearth serve`, "
            "or now with `hearth setup`"
        )
    if not model.available:
        return (
            f"{model.name}: its file {model.path} is missing; put it back, or `hearth rm "
            f"{model.name}` and pull or import it again"
        )
    return f"{model.name}: {model.path} is not a readable GGUF file; `hearth rm {model.name}`"


def _run(action: Any) -> Any:
    try:
        return action()
    except HearthError as exc:
        raise click.ClickException(str(exc)) from None


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _or_dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


class _DownloadProgress:
    """A rich progress bar per file on a terminal; one line per file otherwise (logs, CI)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}
        self.reported: set[str] = set()

    def __enter__(self) -> _DownloadProgress:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def __call__(self, filename: str, done: int, total: int | None) -> None:
        if not self.live:
            if filename not in self.reported:
                self.reported.add(filename)
                resumed = f", resuming at {_size(done)}" if done and done != total else ""
                self.console.print(f"downloading {filename} ({_size(total)}{resumed})")
            return
        task = self.tasks.get(filename)
        if task is None:
            task = self.tasks[filename] = self.progress.add_task(filename, total=total)
        self.progress.update(task, completed=done, total=total)
