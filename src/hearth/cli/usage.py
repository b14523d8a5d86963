"""`hearth usage`: requests, tokens and cost since a time, grouped, from the database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from hearth.cli.options import settings_from, settings_options
from hearth.db.engine import create_engine, migrate
from hearth.db.outage import database_errors
from hearth.errors import DatabaseUnavailable
from hearth.usage.report import GroupBy, usage_report

FIGURES = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost")


@click.command()
@click.option(
    "--by",
    type=click.Choice(["key", "model", "team", "deployment"]),
    default="model",
    show_default=True,
)
@click.option("--since", default="7d", show_default=True, help="Span (7d, 24h, 30m) or a date.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def usage(
    by: GroupBy, since: str, as_json: bool, config_file: Path | None, data_dir: Path | None
) -> None:
    """Requests, tokens and cost per key, model, team or deployment."""
    settings = settings_from(config_file, data_dir=data_dir)

    async def run() -> list[dict[str, Any]]:
        engine = create_engine(settings)
        try:
            with database_errors("open the usage database"):
                await migrate(engine)
            return await usage_report(engine, since, by)
        finally:
            await engine.dispose()

    try:
        rows = asyncio.run(run())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    except DatabaseUnavailable as exc:  # one line, not a traceback
        raise click.ClickException(exc.message) from None
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no usage since {since}")
        return
    columns = (by, *FIGURES)
    table = [[("-" if r[c] is None else str(r[c])) for c in columns] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for line in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
