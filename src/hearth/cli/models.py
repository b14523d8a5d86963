"""`hearth pull | import | ls | show | rm | outdated | rollback`: the model store from the
command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hearth.cli.create import reload_running_server
from hearth.cli.options import settings_from, settings_options
from hearth.cli.output import DownloadProgress, human_size, run_store_action
from hearth.cli.running import server_url
from hearth.cli.search import machine_target
from hearth.config import Settings
from hearth.engines.prompt_cache import PromptCache
from hearth.errors import HearthError
from hearth.models.adapters import AdapterStore
from hearth.models.bundled import BUNDLED_MODEL_NAME, BUNDLED_TEMPLATE
from hearth.models.gguf_info import GGUFInfo, memory_breakdown, parameter_size, read_gguf_info
from hearth.models.presets import Preset, PresetStore
from hearth.models.projector import projector_capabilities, read_projector
from hearth.models.pull import pull as pull_model
from hearth.models.search import library_name_message
from hearth.models.store import ModelStore, StoredModel, revision_name, short_revision
from hearth.models.versions import check as check_revisions
from hearth.models.versions import rollback as rollback_model
from hearth.models.versions import update as update_model

LOADED_TIMEOUT = 1.0


@click.command()
@click.argument("ref")
@click.option("--name", help="Register under this name.  [default: owner/repo:QUANT]")
@click.option("--quant", help="This quantization (e.g. Q8_0), whatever fits.")
@click.option(
    "--update", is_flag=True,
    help="REF is a pulled model's name: fetch the hub's current revision of it, keeping the one "
    "it replaces as NAME@REV (see `hearth outdated`, `hearth rollback`).",
)  # fmt: skip
@settings_options
def pull(
    ref: str,
    name: str | None,
    quant: str | None,
    update: bool,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Download a GGUF model from the Hugging Face Hub.

    \b
    REF is one of:
      owner/repo              the largest quantization that fits this machine (see search)
      owner/repo:Q5_K_M       that quantization
      owner/repo/file.gguf    that exact file (all parts, for a split model)

    An interrupted download resumes when pulled again; every file is checked against the sha256
    the hub publishes. HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE are honoured.

    With --update, REF is the name of a pulled model: the hub's current revision is downloaded
    beside the one in use, NAME serves it (a running Hearth switches without dropping requests)
    and the one it replaced stays as NAME@REV, up to store.keep_revisions of them.
    """
    settings = settings_from(config_file, data_dir=data_dir)
    store = ModelStore(settings.models_dir)
    console = Console(stderr=True)
    if update:
        _update(ref, name, quant, settings, store, console)
        return
    before = {m.name: m.revision for m in run_store_action(store.list)}
    if "/" not in ref and (message := library_name_message(ref)) is not None:
        raise click.ClickException(message)
    target = machine_target(settings)
    with DownloadProgress(console) as progress:
        model = run_store_action(
            lambda: pull_model(
                ref, store, name=name, progress=progress, quant=quant, fit=target,
                explain=lambda reason: console.print(reason), keep=settings.store.keep_revisions,
            )
        )  # fmt: skip
    console.print(f"[green]✓[/] {model.name} ({human_size(model.size)}) at {model.path}")
    if model.projector is not None:
        console.print(f"  with its projector {model.projector.name} ({_projector_text(model)})")
    if before.get(model.name) not in (None, model.revision):  # a new revision of a model
        console.print(_switched(model, before[model.name]))
        console.print(reload_running_server(settings))


def _update(
    name: str,
    new_name: str | None,
    quant: str | None,
    settings: Settings,
    store: ModelStore,
    console: Console,
) -> None:
    if new_name is not None or quant is not None:
        raise click.ClickException(
            "--update takes the name of a pulled model alone (no --name or --quant): it fetches "
            "the same file at the hub's current revision"
        )
    keep = settings.store.keep_revisions
    with DownloadProgress(console) as progress:
        result = run_store_action(lambda: update_model(store, name, progress=progress, keep=keep))
    model = result.model
    if result.replaced is None:
        console.print(f"{model.name} is up to date (revision {_short(model.revision)})")
        return
    console.print(f"[green]✓[/] {_switched(model, result.replaced)}")
    console.print(reload_running_server(settings))


def _switched(model: StoredModel, replaced: str | None) -> str:
    """`NAME now serves …; … is kept as NAME@…` (or deleted, when no revision is kept)."""
    kept = next((r for r in model.older if r.revision == replaced), None)
    then = (
        f"kept as {revision_name(model.name, kept.revision)} (`hearth rollback {model.name}` "
        "returns to it)"
        if kept is not None
        else "deleted (store.keep_revisions is 0)"
    )
    return (
        f"{model.name} now serves revision {_short(model.revision)}; the previous one, "
        f"{_short(replaced)}, is {then}"
    )


@click.command()
@settings_options
def outdated(config_file: Path | None, data_dir: Path | None) -> None:
    """List the pulled models whose repository on the Hub has a newer revision.

    A model is out of date when its repository's current commit differs from the one its files
    come from; `hearth pull --update NAME` fetches it. A hub that cannot be reached is said per
    model.
    """
    settings = settings_from(config_file, data_dir=data_dir)
    found = run_store_action(lambda: check_revisions(ModelStore(settings.models_dir)))
    if not found:
        click.echo("no pulled models (`hearth pull owner/repo` pulls one)")
        return
    table = Table()
    for column in ("name", "revision", "on the hub", "status"):
        table.add_column(column, overflow="fold")
    for item in found:
        if item.problem is not None:
            status = f"cannot check: {item.problem}"
        elif item.outdated:
            status = f"outdated: hearth pull --update {item.name}"
        else:
            status = "up to date"
        table.add_row(item.name, _short(item.revision), _short(item.upstream), status)
    Console().print(table)


@click.command()
@click.argument("name")
@click.option(
    "--to", "to", metavar="REV",
    help="Roll back to this kept revision (7 to 40 hex digits) instead of the previous one.",
)  # fmt: skip
@settings_options
def rollback(name: str, to: str | None, config_file: Path | None, data_dir: Path | None) -> None:
    """Make NAME serve its previous revision again (one kept by an update: `hearth show NAME`).

    The revision it served is kept in its place, so `hearth rollback NAME` again returns to it.
    A running Hearth switches without dropping requests.
    """
    settings = settings_from(config_file, data_dir=data_dir)
    model = run_store_action(lambda: rollback_model(ModelStore(settings.models_dir), name, to))
    left = model.older[0].revision
    click.echo(
        f"{model.name} now serves revision {_short(model.revision)}; {_short(left)} is kept as "
        f"{revision_name(model.name, left)}"
    )
    click.echo(reload_running_server(settings))


@click.command(name="import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Register under this name.  [default: the file's stem]")
@click.option(
    "--reference", is_flag=True,
    help="Use the file where it is instead of copying it into the data folder.",
)  # fmt: skip
@click.option(
    "--mmproj", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The model's multimodal projector (mmproj-*.gguf), loaded with it so it sees images.",
)  # fmt: skip
@settings_options
def import_(
    path: Path,
    name: str | None,
    reference: bool,
    mmproj: Path | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Register a local GGUF file (the first part, for a split model). It is copied into the
    data folder unless --reference is given, in which case it must stay where it is. A vision
    model's projector comes with --mmproj."""
    settings = settings_from(config_file, data_dir=data_dir)
    store = ModelStore(settings.models_dir)
    model = run_store_action(
        lambda: store.import_file(path, name=name, copy=not reference, projector=mmproj)
    )
    how = "copied to" if model.copied else "referenced at"
    click.echo(f"imported {model.name} ({human_size(model.size)}), {how} {model.path}")
    if model.projector is not None:
        click.echo(f"with its projector {model.projector} ({_projector_text(model)})")


@click.command(name="ls")
@settings_options
def ls(config_file: Path | None, data_dir: Path | None) -> None:
    """List the models in the store."""
    settings = settings_from(config_file, data_dir=data_dir)
    store = ModelStore(settings.models_dir)
    models = run_store_action(store.list)
    loaded = loaded_models(settings) or set()
    table = Table()
    columns = ("name", "size", "quant", "params", "context", "capabilities", "loaded", "revision")
    for column in columns:
        table.add_column(column, overflow="fold")
    notes = []
    for model in models:
        info = _info(model)
        if info is None:
            notes.append(_missing_note(model))
        table.add_row(
            _name_cell(model),
            human_size(model.size) if model.available else "missing",
            _or_dash(info.quantization if info else None),
            parameter_size(info.parameter_count if info else None) or "-",
            _or_dash(info.context_length if info else None),
            _capabilities_text(model, info) if info else "-",
            "yes" if model.name in loaded else "no",
            _revision_cell(model),
        )
    for preset in run_store_action(PresetStore(settings.models_dir).list):
        loaded_base = "yes (its base)" if preset.base in loaded else "no"
        table.add_row(preset.name, "preset", "-", "-", "-", f"from {preset.base}", loaded_base, "-")
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
    preset = run_store_action(lambda: PresetStore(settings.models_dir).get(name))
    if preset is not None:
        _show_preset(preset)
        return
    model = run_store_action(lambda: ModelStore(settings.models_dir).get(name))
    rows: list[tuple[str, Any]] = [
        ("name", model.name),
        ("source", _source_text(model)),
        *_revision_rows(model),
        ("file" if len(model.files) == 1 else "files", "\n".join(str(f) for f in model.files)),
        ("stored", "copy in the data folder" if model.copied else "referenced (not copied)"),
        ("size", human_size(model.size) if model.available else "missing"),
        ("added", model.added.strftime("%Y-%m-%d %H:%M UTC") if model.added else "-"),
        ("loaded", "yes" if model.name in (loaded_models(settings) or set()) else "no"),
        ("adapters", _adapters_row(settings, model.name)),
        ("projector", _projector_text(model, path=True) if model.projector else None),
    ]
    info = run_store_action(lambda: read_gguf_info(model.path)) if model.available else None
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
    if run_store_action(lambda: name in presets):
        preset = run_store_action(lambda: presets.remove(name))
        click.echo(f"removed the preset {preset.name} (its base {preset.base} is kept)")
        click.echo(reload_running_server(settings))
        return
    store = ModelStore(settings.models_dir)
    name = run_store_action(lambda: store.get(name)).name  # NAME@REV with more digits: as listed
    users = run_store_action(lambda: presets.users_of(name))
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
    model = run_store_action(lambda: store.remove(name))
    PromptCache(settings.prompt_cache_dir, settings.prompt_cache_max).remove_model(name)
    if detached := run_store_action(lambda: AdapterStore(settings.models_dir).remove_all(name)):
        click.echo(f"removed its adapters {', '.join(a.name for a in detached)}")
    if "@" in model.name:  # one kept revision: the running server forgets its name
        click.echo(f"removed the revision {model.name} (its files are deleted)")
        click.echo(reload_running_server(settings))
        return
    kept = "" if model.copied else f" (the file {model.path} was left in place)"
    older = f" and its {len(model.older)} earlier revision(s)" if model.older else ""
    click.echo(f"removed {model.name}{older}{kept}")


def _short(revision: str | None) -> str:
    return "-" if not revision else short_revision(revision)


def _name_cell(model: StoredModel) -> Text:
    """The name, and for a model Hearth made (`hearth convert`, `hearth quantize`) what from."""
    cell = Text(model.name)
    if model.kind in ("converted", "quantized"):
        cell.append(f"\n{model.kind} from {model.source.split(' (', 1)[0]}", style="dim")
    return cell


def _source_text(model: StoredModel) -> str:
    if model.kind in ("converted", "quantized"):  # the source is a folder, repo or model
        return f"{model.kind} from {model.source}"
    return model.source


def _revision_cell(model: StoredModel) -> str:
    if model.kind != "pulled" or not model.revision:
        return "-"
    if "@" in model.name:
        return f"{_short(model.revision)} (kept)"
    kept = f" (+{len(model.older)} kept)" if model.older else ""
    return f"{_short(model.revision)}{kept}"


def _revision_rows(model: StoredModel) -> list[tuple[str, Any]]:
    if model.kind != "pulled":
        return []
    if "@" in model.name:
        base = model.name.rpartition("@")[0]
        return [("revision", f"{model.revision} (kept: `hearth rollback {base}` returns to it)")]
    kept = "\n".join(revision_name(model.name, r.revision) for r in model.older)
    return [("revision", model.revision or "unknown"), ("kept revisions", kept or None)]


def _adapters_row(settings: Settings, model: str) -> str:
    """`hearth show`'s adapters: each as the name a request uses."""
    adapters = run_store_action(lambda: AdapterStore(settings.models_dir).list(model))
    return "\n".join(f"{a.name} ({human_size(a.size)}; ask for {model}+{a.name})" for a in adapters)


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
        ("adapter", preset.adapter),
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
        ("capabilities", _capabilities_text(model, info)),
        ("chat template", template),
        ("split parts", info.split_count if info.split_count > 1 else None),
        (
            "estimated memory",
            f"{human_size(memory.total)} at ctx_size {ctx}, {parallel} slots "
            f"(weights {human_size(memory.weights)} + KV cache {human_size(memory.kv_cache)} "
            f"+ compute {human_size(memory.compute)})",
        ),
    ]


def _capabilities_text(model: StoredModel, info: GGUFInfo) -> str:
    """The model's capabilities by its metadata, and what its projector adds (vision)."""
    found = [*info.capabilities]
    found += [c for c in projector_capabilities(model.projector) if c not in found]
    return ", ".join(found)


def _projector_text(model: StoredModel, *, path: bool = False) -> str:
    """What a model's projector is: `gemma3, F16, vision` (its file first with `path`)."""
    assert model.projector is not None
    where = f"{model.projector} " if path else ""
    try:
        info = read_projector(model.projector)
    except HearthError as exc:
        return f"{where}(unusable: {exc})"
    facts = [info.projector_type, info.quantization, *info.capabilities]
    return where + ", ".join(fact for fact in facts if fact)


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


def _or_dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)
