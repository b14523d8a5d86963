"""Budgets: a spending cap per calendar period (UTC), in tokens or in the price's currency.
A value type shared by the settings (team budgets) and the keys."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

_BUDGET = re.compile(
    r"^\s*(?P<dollar>\$)?(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>tokens|usd)?\s*/\s*"
    r"(?P<period>day|month)\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Budget:
    """A spending cap per calendar period (UTC): tokens, or cost in the price's currency."""

    amount: float
    unit: Literal["tokens", "usd"]
    period: Literal["day", "month"]

    @classmethod
    def parse(cls, text: str) -> Budget:
        """'100000tokens/day', '100000/day' (tokens), '25usd/month', '$25/month'."""
        match = _BUDGET.match(text)
        if not match:
            raise ValueError(
                f"{text!r} is not a budget; write AMOUNT/PERIOD such as '100000tokens/day', "
                "'25usd/month' or '$25/month'"
            )
        usd = bool(match["dollar"]) or (match["unit"] or "").lower() == "usd"
        day = match["period"].lower() == "day"
        return cls(float(match["amount"]), "usd" if usd else "tokens", "day" if day else "month")

    def __str__(self) -> str:
        amount = f"{self.amount:g}"
        return f"${amount}/{self.period}" if self.unit == "usd" else f"{amount}tokens/{self.period}"

    def window(self, now: dt.datetime) -> dt.datetime:
        """Start of the period `now` falls in."""
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.replace(day=1) if self.period == "month" else start

    def charge(self, tokens: int, cost: float) -> float:
        return float(tokens) if self.unit == "tokens" else cost
