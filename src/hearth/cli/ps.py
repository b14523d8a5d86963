"""`hearth ps` and `hearth unload`: ask a running Hearth which models are loaded, unload one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.table import Table

from hearth.cli.options import settings_from, settings_options
from hearth.cli.running import admin_headers, server_url
from hearth.config import Settings


def _admin(settings: Settings, method: str, path: str) -> Any:
    url = f"{server_url(settings)}/admin/models{path}"
    try:
        headers = admin_headers(settings)
        response = httpx.request(method, url, headers=headers, timeout=30, trust_env=False)
    except httpx.TransportError:
        raise click.ClickException(
            f"no Hearth answers at {url}; start one with `hearth serve` (or pass --config)"
        ) from None
    body = response.json()
    if response.status_code >= 400:
        raise click.ClickException(body.get("error", {}).get("message", response.text))
    return body


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0:
        return "never"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


@click.command()
@settings_options
def ps(config_file: Path | None, data_dir: Path | None) -> None:
    """List the models a running Hearth has loaded."""
    answer = _admin(settings_from(config_file, data_dir=data_dir), "GET", "/loaded")
    loaded = answer["data"] + answer.get("draining", [])
    table = Table()
    columns = ("model", "state", "pid", "replicas", "in flight", "idle", "unloads in", "restarts")
    for column in columns:
        table.add_column(column)
    for model in loaded:
        table.add_row(
            model["name"],
            model["state"],
            str(model["pid"] or "-"),
            str(len(model.get("replicas") or [model])),
            str(model["in_flight"]),
            _seconds(model["idle_for_s"]),
            _unloads_in(model),
            str(model["restarts"]),
        )
    Console().print(table if loaded else "no models loaded")


def _unloads_in(model: dict[str, Any]) -> str:
    if model["state"] == "draining":  # an old engine after an update or a settings change
        return "when its requests end"
    return "never" if model["keep_alive_s"] < 0 else _seconds(model["expires_in_s"])


@click.command()
@click.argument("name")
@settings_options
def unload(name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Unload model NAME from a running Hearth now."""
    settings = settings_from(config_file, data_dir=data_dir)
    answer = _admin(settings, "POST", f"/{name}/unload")
    click.echo(f"unloaded {answer['name']}")
