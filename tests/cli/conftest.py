"""A loopback fake Hugging Face Hub for the model store's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fake_hub import FakeHub, fake_hub_environment


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    with fake_hub_environment(monkeypatch, tmp_path / "hf-home") as hub:
        yield hub
