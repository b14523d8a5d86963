"""Budget events: one row per key or team, budget period and threshold reached (the unique
constraint makes it once, across replicas and restarts), which is also the webhook's outbox."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("subject", sa.String(240), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("threshold", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt", sa.DateTime()),
        sa.Column("delivered_at", sa.DateTime()),
        sa.Column("last_error", sa.String(300)),
        sa.UniqueConstraint(
            "subject", "period", "period_start", "threshold", name="uq_budget_events_once"
        ),
    )
    op.create_index("ix_budget_events_next_attempt", "budget_events", ["next_attempt"])


def downgrade() -> None:
    op.drop_table("budget_events")
