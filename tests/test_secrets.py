"""`env:`/`file:` secret references: resolved, never shown, and an empty reference is an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.errors import ConfigError
from hearth.secrets import resolve_secret


def test_references_resolve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOME_KEY", "from-the-environment")
    (tmp_path / "key").write_text("from-a-file\n")
    assert resolve_secret("env:SOME_KEY", "x").reveal() == "from-the-environment"
    assert resolve_secret(f"file:{tmp_path / 'key'}", "x").reveal() == "from-a-file"
    assert resolve_secret("a-literal-key", "x").reveal() == "a-literal-key"
    assert "from" not in repr(resolve_secret("env:SOME_KEY", "x"))


@pytest.mark.parametrize(("reference", "hint"), [("env:", "env:NAME"), ("file:", "file:PATH"),
                                                 ("env: ", "env:NAME")])  # fmt: skip
def test_an_empty_reference_is_an_error_not_a_key(reference: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=f"auth.admin_key: '.*' names no .*; write {hint}"):
        resolve_secret(reference, "auth.admin_key")
