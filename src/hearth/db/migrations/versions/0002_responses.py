"""Stored Responses API answers."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(32)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("previous_response_id", sa.String(40)),
        sa.Column("input_items", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_responses_created", "responses", ["created_at"])


def downgrade() -> None:
    op.drop_table("responses")
