"""The tables: API keys, per-request usage rows, hourly roll-ups, the audit log, and stored
Responses API answers, budget events.
Times are naive UTC (the same on SQLite and PostgreSQL).

Changes to these go through a new migration in `migrations/versions/`."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(32), nullable=False),  # shown in listings: "hk_1a2b3c4d"
    Column("hash", String(64), nullable=False, unique=True),  # sha256 hex of the whole key
    Column("team", String(200)),
    Column("models", Text, nullable=False, default="[]"),  # JSON list of fnmatch patterns
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("budget", String(64)),  # "AMOUNT/PERIOD", see hearth.auth.keys.Budget
    Column("expires_at", DateTime()),
    Column("created_at", DateTime(), nullable=False),
    Column("revoked_at", DateTime()),
)

usage = Table(
    "usage",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", DateTime(), nullable=False),
    Column("hour", DateTime(), nullable=False),  # `time` truncated, for roll-ups
    Column("request_id", String(128), nullable=False),
    Column("key_id", String(32)),
    Column("team", String(200)),
    Column("model", String(300), nullable=False),
    Column("deployment", String(300)),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("cached", Boolean, nullable=False, default=False),
    Column("status", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("ttft_ms", Float),
    Column("cost", Float, nullable=False, default=0.0),
    # A cascade attempt whose answer the route's checks rejected (routing/cascade.py): its tokens
    # and cost count, but it is not a request of its own (the request's row follows it).
    Column("escalated", Boolean, nullable=False, default=False, server_default=false()),
    # Seconds of audio transcribed or translated (/v1/audio/*); 0 for every other request.
    Column("audio_seconds", Float, nullable=False, default=0.0, server_default="0"),
    Index("ix_usage_hour", "hour"),
    Index("ix_usage_key_time", "key_id", "time"),
    Index("ix_usage_team_time", "team", "time"),
)

usage_hourly = Table(
    "usage_hourly",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hour", DateTime(), nullable=False),
    Column("key_id", String(32)),
    Column("team", String(200)),
    Column("model", String(300), nullable=False),
    Column("deployment", String(300)),
    Column("requests", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cost", Float, nullable=False),
    Index("ix_usage_hourly_hour", "hour"),
)

# One row: the first hour not yet rolled up (replicas advance it with compare-and-set).
rollup_state = Table(
    "rollup_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("next_hour", DateTime()),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", DateTime(), nullable=False),
    Column("actor", String(200), nullable=False),  # "cli", "admin-api", ...
    Column("action", String(100), nullable=False),  # "key.create", "key.revoke", "model.unload"
    Column("target", String(300)),
    Column("detail", Text),  # JSON
    Index("ix_audit_time", "time"),
)

# Responses API answers kept for `previous_response_id` and GET /v1/responses/{id}.
responses = Table(
    "responses",
    metadata,
    Column("id", String(40), primary_key=True),  # "resp_" + 32 hex
    Column("owner", String(32)),  # the key's id; None when keys are off (or the admin key)
    Column("created_at", DateTime(), nullable=False),
    Column("model", String(300), nullable=False),
    Column("status", String(20), nullable=False),
    Column("previous_response_id", String(40)),
    Column("input_items", Text, nullable=False),  # JSON list: this request's input, normalised
    Column("body", Text, nullable=False),  # JSON: the Response object as answered
    Index("ix_responses_created", "created_at"),
)

# Budget events: a key or team reached a threshold of its budget in a period. The unique
# constraint makes each one happen once, whichever replica sees it first, across restarts; the
# rows are also the webhook's outbox (next_attempt set while a delivery is owed).
budget_events = Table(
    "budget_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", DateTime(), nullable=False),
    Column("subject", String(240), nullable=False),  # "key:<id>" or "team:<name>"
    Column("period", String(8), nullable=False),  # "day" or "month"
    Column("period_start", DateTime(), nullable=False),
    Column("threshold", Integer, nullable=False),  # percent of the budget
    Column("payload", Text, nullable=False),  # JSON: the webhook body, the same at each try
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", DateTime()),  # None: nothing (more) to deliver
    Column("delivered_at", DateTime()),
    Column("last_error", String(300)),
    UniqueConstraint(
        "subject", "period", "period_start", "threshold", name="uq_budget_events_once"
    ),
    Index("ix_budget_events_next_attempt", "next_attempt"),
)
