"""`hearth usage`: requests, tokens and cost since a time, grouped, from the database; with
`--savings`, what the local models' tokens cost against a cloud model's prices."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from hearth.cli.options import settings_from, settings_options
from hearth.db.engine import create_engine, migrate
from hearth.db.outage import database_errors
from hearth.errors import ConfigError, DatabaseUnavailable
from hearth.usage.report import GroupBy, usage_report
from hearth.usage.savings import savings_report

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
@click.option(
    "--savings",
    is_flag=True,
    help="Local models' tokens: their cost here, on a cloud model, the saving, break-even.",
)
@click.option(
    "--reference",
    metavar="MODEL",
    help="With --savings: the cloud model to compare with (default: savings.reference).",
)
@settings_options
def usage(
    by: GroupBy,
    since: str,
    as_json: bool,
    savings: bool,
    reference: str | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Requests, tokens and cost per key, model, team or deployment."""
    settings = settings_from(config_file, data_dir=data_dir)

    async def run() -> Any:
        engine = create_engine(settings)
        try:
            with database_errors("open the usage database"):
                await migrate(engine)
            if savings:
                return await savings_report(engine, settings, since, by, reference)
            return await usage_report(engine, since, by)
        finally:
            await engine.dispose()

    try:
        rows = asyncio.run(run())
    except ValueError as exc:
        hint = "--reference" if "price table" in str(exc) else "--since"
        raise click.BadParameter(str(exc), param_hint=hint) from None
    except DatabaseUnavailable as exc:  # one line, not a traceback
        raise click.ClickException(exc.message) from None
    except ConfigError as exc:  # a price table that does not read
        raise click.ClickException(str(exc)) from None
    if savings:
        click.echo(json.dumps(rows, indent=2) if as_json else savings_text(rows))
        return
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no usage since {since}")
        return
    columns = (by, *FIGURES)
    click.echo(
        _table(columns, [[("-" if r[c] is None else str(r[c])) for c in columns] for r in rows])
    )


def _table(columns: tuple[str, ...], table: list[list[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for line in table:
        lines.append("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(lines)


SAVINGS = ("local_tokens", "local_cost", "cloud_cost", "saving")
MACHINES: tuple[str, ...] = ("machine", "cost_per_hour", "busy_hours", "tokens_per_hour")
MACHINES += ("cost_per_million", "saved_to_date", "saved_per_day", "break_even")


def savings_text(report: dict[str, Any]) -> str:
    """The savings report as text: the reference, a table per group, a table per machine."""
    ref = report["reference"]
    lines = [
        f"cloud reference: {ref['model']} (${ref['input']:g} in / ${ref['output']:g} out per 1M "
        f"tokens; prices {ref['prices_version']})"
    ]
    by = report["by"]
    rows = report["data"]
    if not rows:
        lines.append(f"no tokens served by local models since {report['since']}")
    else:
        columns = (by, *SAVINGS)
        table = [[_cell(r[by] if c == by else r[c], c) for c in columns] for r in rows]
        lines.append(_table(columns, table))
    if report["machines"]:
        lines.append("")
        table = [[_cell(m[c], c) for c in MACHINES] for m in report["machines"]]
        lines.append(_table(MACHINES, table))
    return "\n".join(lines)


def _cell(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and ("cost" in column or "sav" in column):
        return f"{'-' if value < 0 else ''}${abs(value):,.4f}"
    if isinstance(value, float):
        return f"{value:,.3f}" if column == "busy_hours" else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
