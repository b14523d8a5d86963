"""Alembic environment: Hearth hands it an open connection (see hearth.db.engine.migrate)."""

from __future__ import annotations

from alembic import context

from hearth.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
