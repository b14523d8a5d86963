"""/admin/keys: create, list and revoke API keys; /admin/audit: the audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from hearth.api.services import services_of
from hearth.auth.keys import parse_expiry
from hearth.auth.store import KeyStore
from hearth.budget import Budget
from hearth.db.engine import utcnow
from hearth.errors import InvalidRequest

router = APIRouter(prefix="/admin", tags=["admin"])


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    models: list[str] = Field(default_factory=list)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    budget: str | None = None
    expires: str | None = None
    team: str | None = None


def _store(request: Request) -> KeyStore:
    return services_of(request).keys.store


@router.get("/keys", summary="API keys (never the keys themselves)")
async def list_keys(request: Request) -> dict[str, Any]:
    return {"data": [k.describe() for k in await _store(request).all()]}


@router.post("/keys", summary="Create an API key; the answer is the only time it is shown")
async def create_key(body: NewKey, request: Request) -> dict[str, Any]:
    try:
        budget = Budget.parse(body.budget) if body.budget else None
        expires_at = parse_expiry(body.expires, utcnow()) if body.expires else None
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    record, key = await _store(request).create(
        body.name,
        models=body.models,
        rpm=body.rpm,
        tpm=body.tpm,
        budget=budget,
        expires_at=expires_at,
        team=body.team,
        actor="admin-api",
    )
    await _refresh(request)
    return {**record.describe(), "key": key}


@router.delete("/keys/{key}", summary="Revoke a key (by id, prefix or name)")
async def revoke_key(key: str, request: Request) -> dict[str, Any]:
    record = await _store(request).revoke(key, actor="admin-api")  # KeyNotFound: 404
    await _refresh(request)
    return record.describe()


@router.get("/audit", summary="The audit log of admin actions, newest first")
async def audit(request: Request, limit: int = 100) -> dict[str, Any]:
    return {"data": await _store(request).audit_log(max(1, min(limit, 1000)))}


async def _refresh(request: Request) -> None:
    """This replica sees the change at once; others within auth.refresh_interval."""
    keys = services_of(request).keys
    keys.access.load(await keys.store.all())
