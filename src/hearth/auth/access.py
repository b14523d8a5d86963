"""Deciding, per request and from memory only, whether a caller may go on: key → record (a dict
lookup of its SHA-256), scopes, rate limits and budgets. The key cache is refreshed from the
database by the accounting loop; if the database is down the last good copy stays in force."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import secrets
from dataclasses import dataclass

from hearth.auth.keys import KeyRecord, hash_key
from hearth.auth.limits import Counter, Decision, Kind
from hearth.auth.spend import SpendTracker
from hearth.budget import Budget
from hearth.config import Settings, TeamSettings
from hearth.db.engine import utcnow
from hearth.errors import (
    ConfigError,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    Unauthenticated,
)

log = logging.getLogger(__name__)

# The shortest key Hearth accepts: an admin key shorter than this is a ConfigError at start, and a
# presented key shorter than this is refused before it is hashed (issued keys have 52).
MIN_KEY_LENGTH = 16

NO_KEY_HELP = (
    "create a key with `hearth keys create --name NAME` (or set auth.admin_key), "
    "or pass --no-auth to serve without keys (not recommended)"
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_admin_key(key: str) -> None:
    """ConfigError unless `key` is long enough to resist guessing (MIN_KEY_LENGTH)."""
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"auth.admin_key: the admin key must be at least {MIN_KEY_LENGTH} characters long "
            f"(it has {len(key)}); generate one with `openssl rand -hex 24`"
        )


@dataclass(frozen=True)
class Team:
    name: str
    rpm: int | None
    tpm: int | None
    budget: Budget | None


def teams_of(settings: Settings) -> dict[str, Team]:
    teams = {}
    for name, team in settings.auth.teams.items():
        teams[name] = _team(name, team)
    return teams


def _team(name: str, team: TeamSettings) -> Team:
    try:
        budget = Budget.parse(team.budget) if team.budget else None
    except ValueError as exc:
        raise ConfigError(f"auth.teams.{name}.budget: {exc}") from None
    return Team(name, team.rpm, team.tpm, budget)


class Access:
    def __init__(
        self,
        settings: Settings,
        counter: Counter,
        admin_key: str | None = None,
    ) -> None:
        self.no_auth = settings.no_auth
        if admin_key is not None:
            check_admin_key(admin_key)
        self.admin_hash = None if admin_key is None else hash_key(admin_key)
        self.teams = teams_of(settings)
        self.counter = counter
        self.spend = SpendTracker()
        self.keys: dict[str, KeyRecord] = {}  # sha256 hex → record
        self.keys_exist = False
        self.refreshed_at: dt.datetime | None = None

    @property
    def enforced(self) -> bool:
        """Keys are required once any key was ever created or an admin key is set."""
        return not self.no_auth and (self.keys_exist or self.admin_hash is not None)

    def budgets_in_use(self, records: list[KeyRecord]) -> bool:
        """Whether any key among `records` or any team has a budget to check spend against."""
        return any(r.budget is not None for r in records) or any(
            t.budget is not None for t in self.teams.values()
        )

    def budget_use(self) -> list[tuple[str, Budget, float]]:
        """(subject, budget, share used) of every active key and team with a budget, as this
        replica knows it (the database's totals at the last refresh plus what it counted)."""
        subjects = [(f"key:{k.id}", k.budget) for k in self.keys.values() if k.revoked_at is None]
        subjects += [(f"team:{t.name}", t.budget) for t in self.teams.values()]
        return [
            (subject, budget, self.spend.spent(subject, budget) / budget.amount)
            for subject, budget in subjects
            if budget is not None and budget.amount > 0
        ]

    def load(self, records: list[KeyRecord]) -> None:
        self.keys = {record.hash: record for record in records}
        self.keys_exist = bool(records)
        self.refreshed_at = utcnow()

    def check_exposure(self, host: str) -> None:
        """Refuse to serve without keys on an address other machines can reach."""
        if self.no_auth:
            log.warning(
                "authentication is OFF (no_auth): anyone who can reach %s may use every model "
                "and the /admin endpoints",
                host,
            )
            return
        if not self.enforced and not is_loopback(host):
            raise ConfigError(
                f"refusing to listen on {host} without API keys: anyone on the network could "
                f"use it. {NO_KEY_HELP[0].upper()}{NO_KEY_HELP[1:]}."
            )

    def authenticate(self, presented: str | None) -> tuple[KeyRecord | None, bool]:
        """(the key's record or None, whether it is the admin key). Raises Unauthenticated."""
        if presented is None:
            raise Unauthenticated(
                "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key'."
            )
        if len(presented) < MIN_KEY_LENGTH:  # no key, admin or issued, is this short
            raise Unauthenticated("Incorrect API key provided.")
        digest = hashlib.sha256(presented.encode()).hexdigest()
        if self.admin_hash is not None and secrets.compare_digest(digest, self.admin_hash):
            return None, True
        record = self.keys.get(digest)
        if record is None or not secrets.compare_digest(record.hash, digest):
            raise Unauthenticated("Incorrect API key provided.")
        if record.revoked_at is not None:
            raise Unauthenticated(f"The API key {record.prefix} has been revoked.")
        if record.expires_at is not None and record.expired(utcnow()):
            raise Unauthenticated(f"The API key {record.prefix} has expired.")
        return record, False

    async def admit(self, key: KeyRecord, *names: str) -> dict[str, str]:
        """Scopes, budgets and rate limits for one request; returns the x-ratelimit-* headers.
        `names`: the model as asked for, then its canonical name."""
        if not key.allows_model(*names):
            raise PermissionDenied(
                f"The API key {key.prefix} may not use the model '{names[0]}'.", param="model"
            )
        team = self.teams.get(key.team) if key.team else None
        for subject, budget in ((f"key:{key.id}", key.budget), self._team_budget(team)):
            if budget is not None and self.spend.spent(subject, budget) >= budget.amount:
                who = "team " + subject[5:] if subject.startswith("team:") else f"key {key.prefix}"
                raise QuotaExceeded(
                    f"The {who} has used its budget of {budget} for this {budget.period}."
                )
        headers: dict[str, str] = {}
        subjects = [(f"key:{key.id}", key.rpm, key.tpm)]
        if team is not None:
            subjects.append((f"team:{team.name}", team.rpm, team.tpm))
        taken: list[str] = []
        for subject, rpm, tpm in subjects:
            if rpm is not None:
                decision = await self.counter.check(subject, "requests", "take", rpm, 1)
                if not decision.allowed:
                    await self._refund(taken)
                    raise _limited(subject, "requests", decision)
                taken.append(subject)
                if "x-ratelimit-limit-requests" not in headers:  # the key's own, else the team's
                    headers.update(decision.headers("requests"))
            if tpm is not None:
                decision = await self.counter.check(subject, "tokens", "peek", tpm, 0)
                if not decision.allowed:
                    await self._refund(taken)
                    raise _limited(subject, "tokens", decision)
                if "x-ratelimit-limit-tokens" not in headers:
                    headers.update(decision.headers("tokens"))
        return headers

    def _team_budget(self, team: Team | None) -> tuple[str, Budget | None]:
        return ("team:" + team.name, team.budget) if team is not None else ("", None)

    async def _refund(self, subjects: list[str]) -> None:
        for subject in subjects:
            await self.counter.check(subject, "requests", "add", 1, -1)

    def tpm_charges(self, key: KeyRecord) -> list[tuple[str, int]]:
        """The token counters an answer of this key counts against: [(subject, limit)]."""
        charges = [] if key.tpm is None else [(f"key:{key.id}", key.tpm)]
        team = self.teams.get(key.team) if key.team else None
        if team is not None and team.tpm is not None:
            charges.append((f"team:{team.name}", team.tpm))
        return charges

    async def charge(self, charges: list[tuple[str, int]], tokens: int) -> None:
        """Count an answered request's tokens against TPM (budgets are counted by `spend`)."""
        for subject, limit in charges:
            await self.counter.check(subject, "tokens", "add", limit, tokens)


def _limited(subject: str, kind: Kind, decision: Decision) -> RateLimited:
    who = f"team {subject[5:]}" if subject.startswith("team:") else "API key"
    unit = "requests" if kind == "requests" else "tokens"
    retry = max(1, round(decision.retry_after + 0.499))
    headers = {**decision.headers(kind), "retry-after": str(retry)}
    return RateLimited(
        f"Rate limit reached for the {who}: {decision.limit} {unit} per minute. "
        f"Try again in {retry} s.",
        headers,
    )
