"""`hearth keys create | ls | revoke`: API keys, straight in the database the server uses (a
running server picks changes up within auth.refresh_interval)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hearth.auth.keys import parse_expiry
from hearth.auth.store import KeyStore
from hearth.budget import Budget
from hearth.cli.options import settings_from, settings_options
from hearth.db.engine import create_engine, migrate, utcnow
from hearth.db.outage import database_errors
from hearth.errors import DatabaseUnavailable, KeyNotFound

T = TypeVar("T")


def with_store(
    config_file: Path | None, data_dir: Path | None, work: Callable[[KeyStore], Awaitable[T]]
) -> T:
    settings = settings_from(config_file, data_dir=data_dir)

    async def run() -> T:
        engine = create_engine(settings)
        try:
            with database_errors("open the key database"):
                await migrate(engine)
            return await work(KeyStore(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DatabaseUnavailable as exc:  # one line, not a traceback
        raise click.ClickException(exc.message) from None


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command()
@click.option("--name", required=True, help="Who or what uses the key.")
@click.option(
    "--models",
    multiple=True,
    metavar="PATTERN",
    help="Allowed models (glob; repeat). Default: all.",
)
@click.option("--rpm", type=click.IntRange(min=1), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), help="Tokens per minute.")
@click.option("--budget", help="AMOUNT/PERIOD: 100000tokens/day, $25/month.")
@click.option("--expires", help="Date (YYYY-MM-DD, UTC) or span (30d, 12h).")
@click.option("--team", help="Team whose limits (auth.teams) also apply.")
@settings_options
def create(
    name: str,
    models: tuple[str, ...],
    rpm: int | None,
    tpm: int | None,
    budget: str | None,
    expires: str | None,
    team: str | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Create a key and print it (once: only its hash is stored)."""
    try:
        parsed_budget = Budget.parse(budget) if budget else None
        expires_at = parse_expiry(expires, utcnow()) if expires else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    record, key = with_store(
        config_file,
        data_dir,
        lambda store: store.create(
            name,
            models=list(models),
            rpm=rpm,
            tpm=tpm,
            budget=parsed_budget,
            expires_at=expires_at,
            team=team,
        ),
    )
    click.echo(key)
    click.echo(
        f"created key {record.prefix} ({name}); it is shown only now, store it safely", err=True
    )


@keys.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "show_all", is_flag=True, help="Include revoked keys.")
@settings_options
def ls_keys(as_json: bool, show_all: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """List keys (prefix, name, team, scopes, limits, state); never the keys themselves."""
    records = with_store(config_file, data_dir, lambda store: store.all())
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for record in records:
        if record.revoked_at is not None and not show_all:
            continue
        row = record.describe()
        row["state"] = (
            "revoked"
            if record.revoked_at is not None
            else "expired"
            if record.expired(now)
            else "active"
        )
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no keys (create one with `hearth keys create --name NAME`)")
        return
    columns = ("prefix", "name", "team", "models", "rpm", "tpm", "budget", "expires_at", "state")
    table = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for line in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value) or "*"
    return str(value)


@keys.command()
@click.argument("key")
@settings_options
def revoke(key: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Revoke a key by its prefix (hk_...), id or name."""
    try:
        record = with_store(config_file, data_dir, lambda store: store.revoke(key))
    except KeyNotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {record.prefix} ({record.name})")
