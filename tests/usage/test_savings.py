"""What self-hosting saved, computed from recorded usage rows (a real SQLite file and, where
reachable, a real PostgreSQL) and checked against a calculation written out here; the price
table and its override; `hearth usage --savings` and GET /admin/savings."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.cli.main import cli
from hearth.config import Settings
from hearth.db.engine import create_engine, migrate, utcnow
from hearth.errors import ConfigError
from hearth.usage.savings import busy_seconds, load_prices, savings_report
from hearth.usage.writer import UsageWriter
from support.access import pg_database, reachable
from support.hearth_server import StartHearth

GPT_4O_MINI = (0.15, 0.60)  # $ per million tokens in the shipped table (version 2025-08)
EMBEDDING_3_SMALL = 0.02
HARDWARE, LIFETIME_YEARS, WATTS, KWH = 1.0, 1.0, 100.0, 0.10


def savings_settings(database_url: str) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "deployments": {"cloud": {"url": "http://127.0.0.1:9/v1"}},
        "savings": {
            "reference": "openai/gpt-4o-mini",
            "references": {"embed": "openai/text-embedding-3-small"},
            "machines": {
                "box": {
                    "deployments": ["gemma", "embed"],
                    "hardware_price": HARDWARE,
                    "lifetime_years": LIFETIME_YEARS,
                    "power_watts": WATTS,
                    "power_price": KWH,
                }
            },
        },
    }


def row(
    end: dt.datetime,
    latency_s: float,
    key: str,
    deployment: str,
    prompt: int,
    completion: int,
    status: int = 200,
    cost: float = 0.0,
) -> dict[str, Any]:
    return {
        "time": end,
        "request_id": f"r-{end.timestamp()}-{deployment}",
        "key_id": key,
        "team": {"k1": "red", "k2": "blue"}[key],
        "model": deployment,
        "deployment": deployment,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached": False,
        "status": status,
        "latency_ms": latency_s * 1000,
        "ttft_ms": None,
        "cost": cost,
    }


def recorded(t0: dt.datetime) -> list[dict[str, Any]]:
    """Two overlapping gemma requests (busy 0-15 s), one embed request (45 s), a remote
    request, a failed one (not busy time) and one 8 days old (outside the 7-day window)."""
    s = dt.timedelta(seconds=1)
    return [
        row(t0 + 10 * s, 10, "k1", "gemma", 1000, 500),
        row(t0 + 15 * s, 10, "k1", "gemma", 2000, 1000),
        row(t0 + 3600 * s, 45, "k2", "embed", 10_000, 0),
        row(t0 + 60 * s, 2, "k2", "cloud", 5000, 5000, cost=0.99),
        row(t0 + 7200 * s, 30, "k1", "gemma", 0, 0, status=500),
        row(t0 - dt.timedelta(days=8), 100, "k1", "gemma", 4000, 0),
    ]


def by_hand(t0: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    """The report of `recorded`, by key since 30 days, worked out step by step."""
    per_hour = WATTS / 1000 * KWH + HARDWARE / (LIFETIME_YEARS * 365.25 * 24)
    running_per_hour = WATTS / 1000 * KWH
    busy_hours = (15 + 45) / 3600  # 0-10 s and 5-15 s overlap: 15 s, not 20
    window_tokens = 1500 + 3000 + 10_000
    tokens_per_hour = window_tokens / busy_hours
    per_token, running_per_token = per_hour / tokens_per_hour, running_per_hour / tokens_per_hour
    k1_cloud = (7000 * GPT_4O_MINI[0] + 1500 * GPT_4O_MINI[1]) / 1e6
    k2_cloud = 10_000 * EMBEDDING_3_SMALL / 1e6
    recent_cloud = (3000 * GPT_4O_MINI[0] + 1500 * GPT_4O_MINI[1]) / 1e6 + k2_cloud
    recent = recent_cloud - window_tokens * running_per_token
    to_date = recent + 4000 * GPT_4O_MINI[0] / 1e6 - 4000 * running_per_token
    per_day = recent / ((now - t0).total_seconds() / 86400)  # served since t0
    return {
        "k1": {"local_tokens": 8500, "cloud": k1_cloud, "local": 8500 * per_token},
        "k2": {"local_tokens": 10_000, "cloud": k2_cloud, "local": 10_000 * per_token},
        "cost_per_million": per_token * 1e6,
        "tokens_per_hour": tokens_per_hour,
        "saved_to_date": to_date,
        "saved_per_day": per_day,
        "break_even": (now + dt.timedelta(days=(HARDWARE - to_date) / per_day)).date(),
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hearth.db'}"
        return
    if not reachable("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    with pg_database() as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=database_url))
    await migrate(engine)
    yield engine
    await engine.dispose()


async def seed(engine: AsyncEngine, t0: dt.datetime) -> None:
    writer = UsageWriter(engine)
    for item in recorded(t0):
        writer.record(item)
    await writer.flush()


async def test_savings_match_the_calculation_by_hand(
    engine: AsyncEngine, database_url: str
) -> None:
    t0 = utcnow() - dt.timedelta(hours=2)
    await seed(engine, t0)
    settings = Settings(**savings_settings(database_url))
    report = await savings_report(engine, settings, "30d", "key")
    expected = by_hand(t0, utcnow())

    assert report["reference"]["model"] == "openai/gpt-4o-mini"
    assert (report["reference"]["input"], report["reference"]["output"]) == GPT_4O_MINI
    rows = {r["key"]: r for r in report["data"]}
    assert set(rows) == {"k1", "k2"}  # the remote deployment's tokens are not local
    for key in ("k1", "k2"):
        hand = expected[key]
        assert rows[key]["local_tokens"] == hand["local_tokens"]
        assert rows[key]["cloud_cost"] == pytest.approx(hand["cloud"], rel=1e-4)
        assert rows[key]["local_cost"] == pytest.approx(hand["local"], rel=1e-4)
        assert rows[key]["saving"] == pytest.approx(hand["cloud"] - hand["local"], rel=1e-4)
    (box,) = report["machines"]
    assert box["busy_hours"] == pytest.approx(60 / 3600, abs=1e-6)
    assert box["tokens"] == 14_500
    assert box["tokens_per_hour"] == round(expected["tokens_per_hour"])
    assert box["cost_per_million"] == pytest.approx(expected["cost_per_million"], rel=1e-3)
    assert box["saved_to_date"] == pytest.approx(expected["saved_to_date"], rel=1e-4)
    assert box["saved_per_day"] == pytest.approx(expected["saved_per_day"], rel=1e-3)
    got = dt.date.fromisoformat(box["break_even"])
    assert abs((got - expected["break_even"]).days) <= 1


async def test_a_break_even_beyond_a_century_is_said_not_dated(
    engine: AsyncEngine, database_url: str
) -> None:
    """Hardware that the recent savings would pay off only in millennia: a 500 once (a date past
    year 9999)."""
    t0 = utcnow() - dt.timedelta(hours=2)
    await seed(engine, t0)
    settings = savings_settings(database_url)
    settings["savings"]["machines"]["box"]["hardware_price"] = 1e12
    report = await savings_report(engine, Settings(**settings), "30d", "key")
    (box,) = report["machines"]
    assert box["saved_per_day"] > 0
    assert box["break_even"] == "not within 100 years"


async def test_savings_by_model_since_a_day_and_another_reference(
    engine: AsyncEngine, database_url: str
) -> None:
    t0 = utcnow() - dt.timedelta(hours=2)
    await seed(engine, t0)
    settings = Settings(**savings_settings(database_url))
    report = await savings_report(engine, settings, "1d", "model", reference="openai/gpt-4o")
    rows = {r["model"]: r for r in report["data"]}
    assert set(rows) == {"gemma", "embed"}
    assert rows["gemma"]["local_tokens"] == 4500  # the 8-day-old row is outside the day
    assert rows["gemma"]["cloud_cost"] == pytest.approx((3000 * 2.5 + 1500 * 10.0) / 1e6)
    assert rows["embed"]["cloud_cost"] == pytest.approx(10_000 * EMBEDDING_3_SMALL / 1e6)
    with pytest.raises(ValueError, match="not in the cloud price table"):
        await savings_report(engine, settings, "1d", "model", reference="acme/nothing")


async def test_without_machines_local_cost_is_the_recorded_price(
    engine: AsyncEngine, database_url: str
) -> None:
    t0 = utcnow() - dt.timedelta(hours=2)
    writer = UsageWriter(engine)
    writer.record(row(t0, 1, "k1", "gemma", 1_000_000, 0, cost=0.05))
    await writer.flush()
    settings = Settings(database_url=database_url)
    report = await savings_report(engine, settings, "7d", "team")
    (red,) = report["data"]
    assert (red["team"], red["local_cost"], red["cloud_cost"]) == ("red", 0.05, 0.15)
    assert red["saving"] == pytest.approx(0.10)
    assert report["machines"] == []


def test_busy_time_is_the_union_of_intervals() -> None:
    assert busy_seconds([]) == 0
    assert busy_seconds([(0, 10), (5, 15), (20, 30), (21, 22)]) == 25
    assert busy_seconds([(5, 6), (0, 10)]) == 10


def test_the_price_table_is_versioned_and_an_own_file_overrides_it(tmp_path: Path) -> None:
    shipped = load_prices()
    assert shipped.version == "2025-08"
    assert shipped.price("openai/gpt-4o-mini").input == GPT_4O_MINI[0]
    own = tmp_path / "prices.toml"
    own.write_text(
        'version = "2026-12-our-contract"\n'
        '[models."openai/gpt-4o-mini"]\ninput = 0.1\noutput = 0.4\n'
        '[models."acme/big"]\ninput = 9\noutput = 9\n'
    )
    table = load_prices(own)
    assert table.version == "2026-12-our-contract (over 2025-08)"
    assert table.price("openai/gpt-4o-mini").output == 0.4
    assert table.price("acme/big").input == 9
    assert table.price("openai/gpt-4o").input == 2.5  # the rest from the shipped table
    own.write_text('[models."acme/big"]\ninput = -1\n')
    with pytest.raises(ConfigError, match=r"savings\.prices_file"):
        load_prices(own)
    own.write_text("[models\n")
    with pytest.raises(ConfigError, match=r"savings\.prices_file"):
        load_prices(own)
    with pytest.raises(ConfigError, match="cannot read"):
        load_prices(tmp_path / "missing.toml")


def write_config(tmp_path: Path, database_url: str) -> Path:
    config = tmp_path / "hearth.yaml"
    config.write_text(json.dumps(savings_settings(database_url)))  # YAML reads JSON
    return config


def test_hearth_usage_savings_prints_the_report(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'hearth.db'}"

    async def prepare() -> None:
        engine = create_engine(Settings(database_url=database_url))
        await migrate(engine)
        await seed(engine, utcnow() - dt.timedelta(hours=2))
        await engine.dispose()

    asyncio.run(prepare())
    config = write_config(tmp_path, database_url)
    runner = CliRunner()
    args = ["usage", "--savings", "--by", "model", "--since", "30d", "--config", str(config)]
    result = runner.invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("cloud reference: openai/gpt-4o-mini ($0.15 in / $0.6 out")
    assert "prices 2025-08" in lines[0]
    assert lines[1].split() == ["MODEL", "LOCAL_TOKENS", "LOCAL_COST", "CLOUD_COST", "SAVING"]
    gemma = next(line for line in lines if line.startswith("gemma"))
    assert gemma.split()[1] == "8,500"
    assert "BREAK_EVEN" in result.output and result.output.rstrip().splitlines()[-1].startswith(
        "box"
    )
    as_json = runner.invoke(cli, [*args, "--json"], catch_exceptions=False)
    report = json.loads(as_json.output)
    assert {r["model"] for r in report["data"]} == {"gemma", "embed"}
    bad = runner.invoke(cli, [*args, "--reference", "acme/nothing"])
    assert bad.exit_code == 2 and "--reference" in bad.output and "gpt-4o-mini" in bad.output


def test_admin_savings_answers_the_report_and_refuses_bad_input(
    start_hearth: StartHearth, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'hearth.db'}"
    config = write_config(tmp_path, database_url)
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "preload": []}))

    async def prepare() -> None:
        engine = create_engine(Settings(database_url=database_url))
        await migrate(engine)
        await seed(engine, utcnow() - dt.timedelta(hours=2))
        await engine.dispose()

    asyncio.run(prepare())
    server = start_hearth("--config", str(config))
    answer = httpx.get(f"{server.base_url}/admin/savings", params={"by": "key", "since": "30d"})
    assert answer.status_code == 200
    report = answer.json()
    assert {r["key"] for r in report["data"]} == {"k1", "k2"}
    assert report["machines"][0]["machine"] == "box"
    for params, param in (
        ({"since": "yesterday-ish"}, "since"),
        ({"reference": "acme/nothing"}, "reference"),
    ):
        bad = httpx.get(f"{server.base_url}/admin/savings", params=params)
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == param
    assert httpx.get(f"{server.base_url}/admin/savings", params={"by": "x"}).status_code in (
        400,
        422,
    )
