"""`hearth search QUERY`: GGUF repositories on the Hugging Face Hub, their quantizations and
sizes, and which one fits this machine; also the fit target `hearth pull` chooses by."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from hearth.cli.options import settings_from, settings_options
from hearth.config import Settings
from hearth.engines.gpu import detect_accelerators, vram_budget
from hearth.errors import HearthError
from hearth.models.fit import FitTarget, fit_target, gb, gib
from hearth.models.gguf_info import parameter_size
from hearth.models.search import SORTS, HubRepo, Sort
from hearth.models.search import search as search_hub


def machine_target(settings: Settings) -> FitTarget:
    """What this machine offers a model: memory_budget if set, else VRAM if a GPU is found,
    else memory_fraction of RAM."""
    vram = None if settings.memory_budget is not None else vram_budget(detect_accelerators())
    return fit_target(settings, vram)


@click.command()
@click.argument("query")
@click.option(
    "--sort", type=click.Choice(list(SORTS)), default="trending", show_default=True,
    help="The hub's order.",
)  # fmt: skip
@click.option("--limit", type=click.IntRange(1, 100), default=10, show_default=True)
@settings_options
def search(
    query: str, sort: Sort, limit: int, config_file: Path | None, data_dir: Path | None
) -> None:
    """Find GGUF models on the Hugging Face Hub and see which quantization fits this machine
    (at the configured engine.ctx_size and engine.parallel, by the scheduler's memory estimate).

    Pull one with `hearth pull owner/repo` (the largest that fits) or owner/repo:QUANT.
    """
    settings = settings_from(config_file, data_dir=data_dir)
    console = Console()
    errors = Console(stderr=True)
    target = machine_target(settings)
    try:
        with errors.status(f"asking the hub for {query!r}…"):
            repos = search_hub(query, target, sort=sort, limit=limit)
    except HearthError as exc:
        raise click.ClickException(str(exc)) from None
    if not repos:
        console.print(f"no GGUF repositories on the hub match {query!r}")
        return
    table = Table(title=f"fits: {target.describe()}")
    for column in ("repo", "params", "quantizations", "fits"):
        table.add_column(column, overflow="fold")
    for repo in repos:
        table.add_row(repo.repo_id, _params(repo), _quants(repo), _fits(repo))
    console.print(table)
    if any(not r.shape_known and r.fits for r in repos):
        console.print("* weights only: the model's GGUF header could not be read from the hub")


def _params(repo: HubRepo) -> str:
    return parameter_size(repo.parameters) or "-"


def _quants(repo: HubRepo) -> str:
    if repo.problem:
        return f"[red]{repo.problem}[/]"
    if not repo.fits:
        return "no GGUF files"
    return "\n".join(
        f"[green]{f.choice.tag}[/] {gb(f.size)}"
        if f.fits
        else f"[dim]{f.choice.tag} {gb(f.size)}[/]"
        for f in repo.fits
    )


def _fits(repo: HubRepo) -> str:
    if not repo.fits:
        return "-"
    chosen = repo.best
    star = "" if repo.shape_known else "*"
    if chosen is None:
        return f"none (smallest needs {gib(repo.fits[0].need)}{star})"
    return f"{chosen.choice.tag} (needs {gib(chosen.need)}{star})"
