"""API keys as values: making one, hashing it, and what a key may do (models, limits, budget).

A key is `hk_<8 hex>_<40 hex>` (160 random bits); `hk_<8 hex>` is its visible prefix.
Only the SHA-256 of the whole key is stored, so a leaked database does not leak usable keys."""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import re
import secrets
from dataclasses import dataclass
from functools import cached_property

from hearth.budget import Budget

KEY_PREFIX = "hk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """A fresh key: (id, the key itself, its visible prefix)."""
    key_id = secrets.token_hex(4)
    prefix = f"{KEY_PREFIX}{key_id}"
    return key_id, f"{prefix}_{secrets.token_hex(20)}", prefix


@dataclass(frozen=True)
class KeyRecord:
    """One key as the request path sees it (from the in-memory cache, never the database)."""

    id: str
    name: str
    prefix: str
    hash: str
    team: str | None = None
    models: tuple[str, ...] = ()  # fnmatch patterns; empty: every model
    rpm: int | None = None
    tpm: int | None = None
    budget: Budget | None = None
    expires_at: dt.datetime | None = None  # naive UTC
    created_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None

    @cached_property
    def _scope(self) -> re.Pattern[str] | None:
        if not self.models:
            return None
        return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.models))

    def allows_model(self, *names: str) -> bool:
        scope = self._scope
        return scope is None or any(scope.match(n) for n in names)

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def describe(self) -> dict[str, object]:
        """For listings: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "team": self.team,
            "models": list(self.models),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "budget": None if self.budget is None else str(self.budget),
            "expires_at": _iso(self.expires_at),
            "created_at": _iso(self.created_at),
            "revoked_at": _iso(self.revoked_at),
        }


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def parse_expiry(text: str, now: dt.datetime) -> dt.datetime:
    """'2026-12-31', '2026-12-31T12:00', or a span from now: '30d', '12h'."""
    span = re.match(r"^(\d+)\s*([dh])$", text.strip())
    if span:
        amount = int(span[1])
        return now + (dt.timedelta(days=amount) if span[2] == "d" else dt.timedelta(hours=amount))
    try:
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date; use YYYY-MM-DD, an ISO time, or a span like 30d"
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed
