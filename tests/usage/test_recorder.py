"""The usage loop's outage messages: "reachable again" only after the database answered."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from hearth.config import UsageSettings
from hearth.db.engine import migrate
from hearth.usage.recorder import UsageRecorder

BACK = "database reachable again"


async def test_an_empty_round_does_not_claim_the_database_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db" / "usage.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")  # its folder is missing: down
    recorder = UsageRecorder(engine, UsageSettings())
    try:
        with caplog.at_level(logging.INFO, logger="hearth.usage.recorder"):
            await recorder.sync()  # nothing to write; the roll-up is due and fails
            assert "database unavailable" in caplog.text
            await recorder.sync()  # nothing to write, no roll-up due: the database is asked
            await recorder.sync()
            assert BACK not in caplog.text
            path.parent.mkdir()
            await migrate(engine)
            await recorder.sync()
            assert BACK in caplog.text
    finally:
        await engine.dispose()
