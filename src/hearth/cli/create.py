"""`hearth create`: a preset (a base model with a system prompt and default parameters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import httpx

from hearth.cli.options import settings_from, settings_options
from hearth.cli.running import admin_headers, server_url
from hearth.config import Settings
from hearth.errors import HearthError
from hearth.models.adapters import AdapterStore
from hearth.models.presets import Preset, PresetStore, parse_parameter
from hearth.models.store import ModelStore

RELOAD_TIMEOUT = 30.0


@click.command()
@click.argument("name")
@click.option("--from", "base", required=True, help="The model it serves (see `hearth ls`).")
@click.option("--system", help="The system prompt, used when a chat request sends none.")
@click.option(
    "--param", "params", multiple=True, metavar="K=V",
    help="A default request parameter (temperature=0.2, num_predict=200, stop=END; repeat "
    "stop for several).",
)  # fmt: skip
@click.option(
    "--template", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file with an Ollama prompt template (stored and shown by /api/show).",
)  # fmt: skip
@click.option("--adapter", help="A LoRA adapter of the model (see `hearth adapter ls`).")
@click.option("--force", is_flag=True, help="Replace a preset of the same name.")
@settings_options
def create(
    name: str,
    base: str,
    system: str | None,
    params: tuple[str, ...],
    template: Path | None,
    adapter: str | None,
    force: bool,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Create a preset NAME: the model --from with a system prompt and default parameters.

    It shares the base model's engine (no extra memory), with one of its LoRA adapters if
    --adapter names one; a request's own system message and parameters win over the preset's.
    A running server serves it at once.
    """
    settings = settings_from(config_file, data_dir=data_dir)
    presets = PresetStore(settings.models_dir)
    if adapter is not None and adapter not in (known := adapters_of(settings, base)):
        raise click.ClickException(
            f"'{base}' has no adapter '{adapter}'; its adapters: {', '.join(known) or 'none'} "
            "(attach one with `hearth adapter add`)"
        )
    try:
        parameters = _parameters(params)
        text = template.read_text(encoding="utf-8") if template is not None else None
        preset = presets.create(
            Preset(name, base, system, parameters, text, adapter=adapter),
            base_known=base in servable_names(settings, presets.models),
            replace=force,
        )
    except (HearthError, OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {preset.name} from {preset.base}")
    click.echo(reload_running_server(settings))


def _parameters(params: tuple[str, ...]) -> dict[str, Any]:
    """--param pairs; `stop` given several times becomes a list, as Ollama's PARAMETER does."""
    out: dict[str, Any] = {}
    for text in params:
        key, value = parse_parameter(text)
        if key == "stop" and key in out:
            previous = out[key] if isinstance(out[key], list) else [out[key]]
            value = [*previous, *(value if isinstance(value, list) else [value])]
        out[key] = value
    return out


def servable_names(settings: Settings, store: ModelStore) -> set[str]:
    """The names a preset may be built on: stored models and what the settings define."""
    names = set(store.names()) | set(settings.models) | set(settings.routes)
    names |= set(settings.deployments)
    for model in settings.models.values():
        names |= set(model.aliases)
    for deployment in settings.deployments.values():
        names |= set(deployment.aliases)
    for route in settings.routes.values():
        names |= set(route.aliases)
    return names


def adapters_of(settings: Settings, model: str) -> list[str]:
    """The LoRA adapters a model name has: stored with its model, and in its settings entry."""
    entry = settings.models.get(model)
    stored = entry.model if entry is not None else model
    names = [a.name for a in AdapterStore(settings.models_dir).list(stored)]
    names += [name for name in (entry.adapters if entry else {}) if name not in names]
    return names


def reload_running_server(settings: Settings) -> str:
    """Ask a running Hearth to read the store again (POST /admin/reload); what happened, said."""
    url = server_url(settings)
    try:
        response = httpx.post(
            f"{url}/admin/reload",
            headers=admin_headers(settings),
            timeout=RELOAD_TIMEOUT,
            trust_env=False,
        )
    except httpx.HTTPError:
        return f"no server answers at {url}; the change applies from the next `hearth serve`"
    if response.is_success:
        return f"the server at {url} has applied the change"
    return (
        f"the server at {url} did not reload ({response.status_code}); the change applies "
        "after `POST /admin/reload` or a restart"
    )
