"""`hearth adapter add | ls | rm`: LoRA adapters attached to the models in the store."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import click
from rich.console import Console
from rich.table import Table

from hearth.cli.create import reload_running_server
from hearth.cli.options import settings_from, settings_options
from hearth.cli.output import human_size, run_store_action
from hearth.engines.llama_cpp.locate import CONVERT_LORA_SCRIPT, conversion_script
from hearth.models.adapters import AdapterStore, StoredAdapter, convert_adapter, is_peft_adapter

T = TypeVar("T")


@click.group()
def adapter() -> None:
    """LoRA adapters: attached to a model, loaded with it, chosen per request.

    A request uses one as the model `MODEL+NAME` (listed in /v1/models) or with the field
    `"adapter": "NAME"` (or `{"name": "NAME", "scale": 0.5}`); without one the model answers
    as it always did.
    """


@adapter.command(name="add")
@click.argument("model")
@click.argument("name")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--base", "base", type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="For a PEFT folder: the Hugging Face checkpoint it was trained on (its config.json). "
    "[default: the model's source, or the adapter's base_model_name_or_path]",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Replace an adapter of the same name.")
@settings_options
def add(
    model: str,
    name: str,
    source: Path,
    base: Path | None,
    force: bool,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Attach the adapter SOURCE to MODEL as NAME: a LoRA GGUF file (copied into the data
    folder), or a PEFT adapter folder (adapter_config.json), converted to one first.

    The adapter is checked against the model (architecture, tensor shapes) before it is kept.
    A running server reloads the model's engine with it.
    """
    settings = settings_from(config_file, data_dir=data_dir)
    adapters = AdapterStore(settings.models_dir)
    if source.is_dir():
        if not is_peft_adapter(source):
            raise click.ClickException(
                f"{source} is a folder without adapter_config.json; give a PEFT adapter folder "
                "or a LoRA .gguf file"
            )
        script = conversion_script(settings.tools_dir, CONVERT_LORA_SCRIPT)
        stored = run_store_action(
            lambda: convert_adapter(
                source, base, settings, click.echo,
                script=script, name=name, model=model, replace=force,
            )
        )  # fmt: skip
    else:
        stored = run_store_action(lambda: adapters.add(model, name, source, replace=force))
    size = human_size(stored.size)
    click.echo(f"attached {stored.name} to {stored.model} ({size}); ask for it as "
               f"the model '{stored.model}+{stored.name}'")  # fmt: skip
    click.echo(reload_running_server(settings))


@adapter.command(name="ls")
@click.argument("model", required=False)
@settings_options
def ls(model: str | None, config_file: Path | None, data_dir: Path | None) -> None:
    """List the adapters of every model (or of MODEL): stored ones and those in the settings."""
    settings = settings_from(config_file, data_dir=data_dir)
    rows = [
        _row(a) for a in run_store_action(lambda: AdapterStore(settings.models_dir).list(model))
    ]
    for entry, settings_model in settings.models.items():
        if model is not None and model not in (entry, settings_model.model):
            continue
        for adapter_name, file in settings_model.adapters.items():
            rows.append((entry, adapter_name, f"{entry}+{adapter_name}", "-", f"settings: {file}"))
    table = Table()
    for column in ("model", "adapter", "serve as", "size", "source"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@adapter.command(name="rm")
@click.argument("model")
@click.argument("name")
@settings_options
def rm(model: str, name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Detach the adapter NAME from MODEL and delete its file. A running server reloads the
    model's engine without it."""
    settings = settings_from(config_file, data_dir=data_dir)
    removed = run_store_action(lambda: AdapterStore(settings.models_dir).remove(model, name))
    click.echo(f"removed the adapter {removed.name} of {removed.model}")
    click.echo(reload_running_server(settings))


def _row(adapter: StoredAdapter) -> tuple[str, str, str, str, str]:
    serve_as = f"{adapter.model}+{adapter.name}"
    return adapter.model, adapter.name, serve_as, human_size(adapter.size), adapter.source
