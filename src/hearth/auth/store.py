"""Keys and the audit log in the database: create, list, revoke, and load them all for the cache.

Only admin actions and the cache refresh touch these tables, never a request. A database outage
is a `DatabaseUnavailable` (503) from every method."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.auth.keys import KeyRecord, hash_key, new_key
from hearth.budget import Budget
from hearth.db.engine import utcnow
from hearth.db.outage import database_errors
from hearth.db.schema import api_keys, audit_log
from hearth.errors import KeyNotFound


class KeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        name: str,
        *,
        models: list[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        budget: Budget | None = None,
        expires_at: dt.datetime | None = None,
        team: str | None = None,
        actor: str = "cli",
    ) -> tuple[KeyRecord, str]:
        """A new key: its record, and the key itself (shown once, never stored)."""
        key_id, key, prefix = new_key()
        record = KeyRecord(
            id=key_id,
            name=name,
            prefix=prefix,
            hash=hash_key(key),
            team=team,
            models=tuple(models or ()),
            rpm=rpm,
            tpm=tpm,
            budget=budget,
            expires_at=expires_at,
            created_at=utcnow(),
        )
        with database_errors("create a key"):
            async with self.engine.begin() as conn:
                await conn.execute(insert(api_keys).values(**_row(record)))
                await _audit(conn, actor, "key.create", key_id, record.describe())
        return record, key

    async def all(self) -> list[KeyRecord]:
        with database_errors("read the keys"):
            async with self.engine.connect() as conn:
                query = select(api_keys).order_by(api_keys.c.created_at)
                rows = (await conn.execute(query)).all()
        return [_record(dict(row._mapping)) for row in rows]

    async def count(self) -> int:
        with database_errors("count the keys"):
            async with self.engine.connect() as conn:
                query = select(func.count()).select_from(api_keys)
                return int((await conn.execute(query)).scalar_one())

    async def revoke(self, id_or_prefix: str, *, actor: str = "cli") -> KeyRecord:
        """Revoke by id, visible prefix or name (a name must be unambiguous)."""
        matches = [
            k
            for k in await self.all()
            if id_or_prefix in (k.id, k.prefix, k.name) and k.revoked_at is None
        ]
        if not matches:
            raise KeyNotFound(f"no active key has the id, prefix or name {id_or_prefix!r}")
        if len(matches) > 1:
            ids = ", ".join(k.prefix for k in matches)
            raise KeyNotFound(f"{id_or_prefix!r} names several keys ({ids}); use a prefix")
        key = matches[0]
        now = utcnow()
        with database_errors("revoke a key"):
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(api_keys).where(api_keys.c.id == key.id).values(revoked_at=now)
                )
                await _audit(conn, actor, "key.revoke", key.id, {"name": key.name})
        return KeyRecord(**{**key.__dict__, "revoked_at": now})

    async def audit(self, actor: str, action: str, target: str | None, detail: Any = None) -> None:
        with database_errors("write the audit log"):
            async with self.engine.begin() as conn:
                await _audit(conn, actor, action, target, detail)

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        with database_errors("read the audit log"):
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [
            {
                "time": row.time.isoformat() + "Z",
                "actor": row.actor,
                "action": row.action,
                "target": row.target,
                "detail": json.loads(row.detail) if row.detail else None,
            }
            for row in rows
        ]


async def _audit(conn: Any, actor: str, action: str, target: str | None, detail: Any) -> None:
    await conn.execute(
        insert(audit_log).values(
            time=utcnow(),
            actor=actor,
            action=action,
            target=target,
            detail=None if detail is None else json.dumps(detail),
        )
    )


def _row(record: KeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "hash": record.hash,
        "team": record.team,
        "models": json.dumps(list(record.models)),
        "rpm": record.rpm,
        "tpm": record.tpm,
        "budget": None if record.budget is None else str(record.budget),
        "expires_at": record.expires_at,
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    }


def _record(row: Mapping[str, Any]) -> KeyRecord:
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        hash=row["hash"],
        team=row["team"],
        models=tuple(json.loads(row["models"] or "[]")),
        rpm=row["rpm"],
        tpm=row["tpm"],
        budget=Budget.parse(row["budget"]) if row["budget"] else None,
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )
