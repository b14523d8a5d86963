"""Keys, usage rows, hourly roll-ups, roll-up state, audit log."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("team", sa.String(200)),
        sa.Column("models", sa.Text, nullable=False),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("budget", sa.String(64)),
        sa.Column("expires_at", sa.DateTime()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime()),
    )
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(32)),
        sa.Column("team", sa.String(200)),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("deployment", sa.String(300)),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cached", sa.Boolean, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("cost", sa.Float, nullable=False),
    )
    op.create_index("ix_usage_hour", "usage", ["hour"])
    op.create_index("ix_usage_key_time", "usage", ["key_id", "time"])
    op.create_index("ix_usage_team_time", "usage", ["team", "time"])
    op.create_table(
        "usage_hourly",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("key_id", sa.String(32)),
        sa.Column("team", sa.String(200)),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("deployment", sa.String(300)),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
    )
    op.create_index("ix_usage_hourly_hour", "usage_hourly", ["hour"])
    op.create_table(
        "rollup_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("next_hour", sa.DateTime()),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(300)),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_audit_time", "audit_log", ["time"])


def downgrade() -> None:
    for table in ("audit_log", "rollup_state", "usage_hourly", "usage", "api_keys"):
        op.drop_table(table)
