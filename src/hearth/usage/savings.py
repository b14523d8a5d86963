"""What self-hosting saved: tokens served by local models, what they cost here (each machine's
$/hour over its measured throughput), what a cloud model would have charged for them (a
versioned price table), the saving, and when each machine's hardware has paid for itself.

Throughput is measured on the raw usage rows of the last `savings.throughput_days`: a machine's
busy time is the union of its requests' intervals (end time minus latency; overlapping requests
in parallel slots count once), and its tokens per busy hour turn $/hour into $/token. That
price then applies to any period, hourly roll-ups included (they keep tokens, not time)."""

from __future__ import annotations

import asyncio
import datetime as dt
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.config import MachineCost, Price, SavingsSettings, Settings
from hearth.db.engine import utcnow
from hearth.db.outage import database_errors
from hearth.db.schema import usage
from hearth.errors import ConfigError
from hearth.usage.report import GroupBy, key_names, parse_since, totals

BUNDLED_PRICES = "cloud_prices.toml"
EPOCH = dt.datetime(1970, 1, 1)

# Break-even dates further out than this are not dates anyone plans by; they are said as such
# (and a few days of tiny savings would otherwise give a date past year 9999).
MAX_BREAK_EVEN_DAYS = 100 * 365


@dataclass(frozen=True)
class PriceTable:
    version: str
    models: dict[str, Price]

    def price(self, name: str) -> Price:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise ValueError(f"{name!r} is not in the cloud price table; known: {known}") from None


def load_prices(own: Path | None = None) -> PriceTable:
    """The table shipped with Hearth, with the operator's file (if any) over it, model by model."""
    text = resources.files("hearth.usage").joinpath(BUNDLED_PRICES).read_text(encoding="utf-8")
    version, models = _parse(text, "the bundled price table")
    if own is not None:
        try:
            text = own.expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"savings.prices_file: cannot read {own}: {exc.strerror}") from None
        own_version, own_models = _parse(text, f"savings.prices_file {own}")
        version = f"{own_version} (over {version})"
        models = {**models, **own_models}
    return PriceTable(version, models)


def _parse(text: str, where: str) -> tuple[str, dict[str, Price]]:
    try:
        table = tomllib.loads(text)
        models = {name: Price(**figures) for name, figures in table.get("models", {}).items()}
    except (tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
        raise ConfigError(
            f'{where}: {exc}; write version = "..." and [models."vendor/model"] tables with '
            "input and output $ per million tokens"
        ) from None
    return str(table.get("version", "unversioned")), models


def check_settings(settings: SavingsSettings) -> None:
    """At start: the price table reads and names the reference models (else ConfigError)."""
    prices = load_prices(settings.prices_file)
    try:
        Pricing(settings, prices, settings.reference)
    except ValueError as exc:
        raise ConfigError(f"savings: {exc}") from None


def is_local(deployment: str | None, settings: Settings) -> bool:
    """Served by an engine Hearth runs: not a remote deployment nor a model one imports."""
    if deployment is None:
        return False
    remote = settings.deployments
    return deployment not in remote and deployment.split("/", 1)[0] not in remote


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals (requests overlapping in time count once)."""
    busy = 0.0
    reach = float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        busy += end - max(start, reach)
        reach = end
    return busy


@dataclass
class Machine:
    """A machine's figures over the throughput window."""

    name: str
    cost: MachineCost
    busy_hours: float = 0.0
    tokens: int = 0  # served in the window
    first: dt.datetime | None = None  # the window's first request on it

    @property
    def tokens_per_hour(self) -> float | None:
        return self.tokens / self.busy_hours if self.busy_hours > 0 and self.tokens else None

    def per_token(self, running_only: bool = False) -> float | None:
        """$ per token served (None until throughput is measured)."""
        rate = self.tokens_per_hour
        if rate is None:
            return None
        return (self.cost.running_per_hour() if running_only else self.cost.per_hour()) / rate


async def measure(engine: AsyncEngine, machines: list[Machine], since: dt.datetime) -> None:
    """Busy time and tokens of each machine from the raw usage rows since `since`."""
    for machine in machines:
        query = select(
            usage.c.time, usage.c.latency_ms, usage.c.prompt_tokens, usage.c.completion_tokens
        ).where(
            and_(
                usage.c.time >= since,
                usage.c.deployment.in_(machine.cost.deployments),
                usage.c.status < 400,
                usage.c.cached.is_(False),
            )
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        if not rows:
            continue
        epoch = rows[0].time
        intervals = [
            (
                (r.time - epoch).total_seconds() - r.latency_ms / 1000,
                (r.time - epoch).total_seconds(),
            )
            for r in rows
        ]
        busy = await asyncio.to_thread(busy_seconds, intervals)  # sorting: off the event loop
        machine.busy_hours = busy / 3600
        machine.tokens = sum(r.prompt_tokens + r.completion_tokens for r in rows)
        machine.first = min(r.time - dt.timedelta(milliseconds=r.latency_ms) for r in rows)


class Pricing:
    """How one local deployment's tokens are priced: here and on the cloud reference."""

    def __init__(self, settings: SavingsSettings, prices: PriceTable, reference: str) -> None:
        self.settings = settings
        self.prices = prices
        self.reference = reference
        prices.price(reference)  # a ValueError naming the known ones
        for name in settings.references.values():
            prices.price(name)
        self.machines = [Machine(name, cost) for name, cost in settings.machines.items()]
        self._by_deployment = {d: m for m in self.machines for d in m.cost.deployments}

    def machine(self, deployment: str) -> Machine | None:
        return self._by_deployment.get(deployment)

    def cloud(self, deployment: str, prompt: int, completion: int) -> float:
        name = self.settings.references.get(deployment, self.reference)
        return self.prices.price(name).of(prompt, completion)

    def local(self, deployment: str, tokens: int, recorded: float) -> float:
        """From its machine's measured $/token; else what was recorded (its `price`)."""
        machine = self.machine(deployment)
        per_token = None if machine is None else machine.per_token()
        return recorded if per_token is None else tokens * per_token


async def savings_report(
    engine: AsyncEngine,
    settings: Settings,
    since_text: str,
    by: GroupBy,
    reference: str | None = None,
) -> dict[str, Any]:
    """Per `by`: local tokens, their local cost, their cloud cost, the saving; and per machine:
    throughput, $ per million tokens and the break-even date. ValueError for a bad `since` or
    an unknown reference."""
    now = utcnow()
    since = parse_since(since_text, now)
    own = settings.savings
    prices = load_prices(own.prices_file)
    pricing = Pricing(own, prices, reference or own.reference)
    window = now - dt.timedelta(days=own.throughput_days)
    with database_errors("report savings"):
        await measure(engine, pricing.machines, window)
        groups = [by] if by == "deployment" else [by, "deployment"]
        found = await totals(engine, since, groups)  # type: ignore[arg-type]
        names = await key_names(engine) if by == "key" else {}
        machines = [
            await _machine_figures(engine, m, pricing, settings, now) for m in pricing.machines
        ]
    rows: dict[Any, dict[str, Any]] = {}
    for row in found:
        deployment = row["deployment"]
        if not is_local(deployment, settings):
            continue
        prompt, completion = row["prompt_tokens"], row["completion_tokens"]
        tokens = prompt + completion
        group = rows.setdefault(
            row[by],
            {by: row[by], "requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
            | {"local_tokens": 0, "local_cost": 0.0, "cloud_cost": 0.0},
        )
        group["requests"] += row["requests"]
        group["prompt_tokens"] += prompt
        group["completion_tokens"] += completion
        group["local_tokens"] += tokens
        group["local_cost"] += pricing.local(deployment, tokens, row["cost"])
        group["cloud_cost"] += pricing.cloud(deployment, prompt, completion)
    data = []
    for group in rows.values():
        group["saving"] = group["cloud_cost"] - group["local_cost"]
        for field in ("local_cost", "cloud_cost", "saving"):
            group[field] = round(group[field], 8)
        if by == "key":
            group["key"] = names.get(group["key"], group["key"]) if group["key"] else None
        data.append(group)
    data.sort(key=lambda r: (-r["saving"], -r["local_tokens"]))
    price = prices.price(pricing.reference)
    return {
        "by": by,
        "since": since_text,
        "reference": {
            "model": pricing.reference,
            "input": price.input,
            "output": price.output,
            "prices_version": prices.version,
        },
        "data": data,
        "machines": machines,
    }


async def _machine_figures(
    engine: AsyncEngine, machine: Machine, pricing: Pricing, settings: Settings, now: dt.datetime
) -> dict[str, Any]:
    """Throughput and $/token from the window; the saving since it started serving (cloud cost
    minus running cost: the hardware's price is what that saving pays back), its recent daily
    rate, and the date the two meet."""
    cost = machine.cost
    figures: dict[str, Any] = {
        "machine": machine.name,
        "deployments": cost.deployments,
        "cost_per_hour": round(cost.per_hour(), 8),
        "busy_hours": round(machine.busy_hours, 6),
        "tokens": machine.tokens,
        "tokens_per_hour": None
        if machine.tokens_per_hour is None
        else round(machine.tokens_per_hour),
        "cost_per_million": None,
        "hardware_price": cost.hardware_price,
        "saved_to_date": None,
        "saved_per_day": None,
        "break_even": None,
    }
    running = machine.per_token(running_only=True)
    if running is None:
        return figures  # nothing served in the window: no throughput to price tokens with
    figures["cost_per_million"] = round(machine.per_token() * 1_000_000, 6)  # type: ignore[operator]
    start = EPOCH if cost.purchased is None else dt.datetime.combine(cost.purchased, dt.time())
    to_date = await _running_saving(engine, machine, pricing, start, running)
    window_start = now - dt.timedelta(days=settings.savings.throughput_days)
    recent = await _running_saving(engine, machine, pricing, window_start, running)
    began = max(window_start, start, machine.first or window_start)
    days = max((now - began).total_seconds() / 86400, 1 / 24)  # at least an hour's worth
    per_day = recent / days
    figures["saved_to_date"] = round(to_date, 8)
    figures["saved_per_day"] = round(per_day, 8)
    if cost.hardware_price is not None:
        left = cost.hardware_price - to_date
        if left <= 0:
            figures["break_even"] = "reached"
        elif per_day > 0 and left / per_day <= MAX_BREAK_EVEN_DAYS:
            figures["break_even"] = (now + dt.timedelta(days=left / per_day)).date().isoformat()
        elif per_day > 0:  # a date past any hardware's life (and past what a date can hold)
            figures["break_even"] = f"not within {MAX_BREAK_EVEN_DAYS // 365} years"
        else:
            figures["break_even"] = "never at the recent rate"
    return figures


async def _running_saving(
    engine: AsyncEngine,
    machine: Machine,
    pricing: Pricing,
    since: dt.datetime,
    running_per_token: float,
) -> float:
    saved = 0.0
    for row in await totals(engine, since, ["deployment"]):
        if row["deployment"] in machine.cost.deployments:
            prompt, completion = row["prompt_tokens"], row["completion_tokens"]
            cloud = pricing.cloud(row["deployment"], prompt, completion)
            saved += cloud - (prompt + completion) * running_per_token
    return saved
