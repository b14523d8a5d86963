"""Key values: format, hashing, budgets, scopes, expiry."""

from __future__ import annotations

import datetime as dt

import pytest

from hearth.auth.keys import KeyRecord, hash_key, new_key, parse_expiry
from hearth.budget import Budget

NOW = dt.datetime(2026, 11, 22, 15, 30)


def test_new_keys_are_unique_and_carry_their_prefix() -> None:
    key_id, key, prefix = new_key()
    assert key.startswith(prefix + "_") and prefix == f"hk_{key_id}"
    assert len(key) > 40
    assert new_key()[1] != key
    assert hash_key(key) == hash_key(key) and len(hash_key(key)) == 64 and key not in hash_key(key)


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("100000tokens/day", Budget(100000, "tokens", "day")),
        ("100000/day", Budget(100000, "tokens", "day")),
        ("25usd/month", Budget(25, "usd", "month")),
        ("$2.5/month", Budget(2.5, "usd", "month")),
    ],
)
def test_budgets_parse(text: str, budget: Budget) -> None:
    assert Budget.parse(text) == budget
    assert Budget.parse(str(budget)) == budget


@pytest.mark.parametrize("text", ["", "10", "10/week", "ten/day", "$/day"])
def test_bad_budgets_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="AMOUNT/PERIOD"):
        Budget.parse(text)


def test_budget_windows_are_calendar_periods() -> None:
    assert Budget.parse("1/day").window(NOW) == dt.datetime(2026, 11, 22)
    assert Budget.parse("1/month").window(NOW) == dt.datetime(2026, 11, 1)
    assert Budget.parse("$1/day").charge(100, 0.5) == 0.5
    assert Budget.parse("1/day").charge(100, 0.5) == 100


def test_scopes_are_glob_patterns_over_any_name_of_the_model() -> None:
    key = KeyRecord("i", "n", "p", "h", models=("gpt-*", "llama3"))
    assert key.allows_model("gpt-4o")
    assert key.allows_model("alias", "llama3")
    assert not key.allows_model("llama3.1")
    assert KeyRecord("i", "n", "p", "h").allows_model("anything")


def test_expiry() -> None:
    assert parse_expiry("30d", NOW) == NOW + dt.timedelta(days=30)
    assert parse_expiry("12h", NOW) == NOW + dt.timedelta(hours=12)
    assert parse_expiry("2026-12-31", NOW) == dt.datetime(2026, 12, 31)
    assert parse_expiry("2026-12-31T12:00:00+01:00", NOW) == dt.datetime(2026, 12, 31, 11)
    with pytest.raises(ValueError, match="not a date"):
        parse_expiry("soon", NOW)
    key = KeyRecord("i", "n", "p", "h", expires_at=NOW)
    assert key.expired(NOW) and not key.expired(NOW - dt.timedelta(seconds=1))
