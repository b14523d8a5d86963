"""The environment layer leaves secrets alone: variables an `env:` reference names, and the
reserved HEARTH_ADMIN_KEY, are not settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.errors import ConfigError
from hearth.settings_layers import load_settings, secret_references


def test_the_documented_admin_key_variable_is_not_a_setting(tmp_path: Path) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text("auth: {admin_key: 'env:HEARTH_ADMIN_KEY'}\n")
    environ = {"HEARTH_ADMIN_KEY": "a-long-enough-admin-key", "HEARTH_PORT": "9001"}
    settings = load_settings(config, environ=environ)
    assert settings.auth.admin_key == "env:HEARTH_ADMIN_KEY" and settings.port == 9001
    # Reserved: a leftover export does not stop Hearth even when nothing refers to it.
    assert load_settings(None, environ={"HEARTH_ADMIN_KEY": "x"}).auth.admin_key is None


def test_variables_named_by_references_are_not_settings(tmp_path: Path) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text(
        "deployments:\n  up: {url: 'http://127.0.0.1:9/v1', api_key: 'env:HEARTH_UPSTREAM_KEY'}\n"
    )
    environ = {"HEARTH_UPSTREAM_KEY": "sk-1", "HEARTH_TEAM_KEY": "sk-2",
               "HEARTH_AUTH__ADMIN_KEY": "env:HEARTH_TEAM_KEY"}  # fmt: skip
    settings = load_settings(config, environ=environ)
    assert settings.deployments["up"].api_key == "env:HEARTH_UPSTREAM_KEY"
    assert settings.auth.admin_key == "env:HEARTH_TEAM_KEY"


def test_other_unknown_variables_are_still_errors() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'HEARTH_PROT'"):
        load_settings(None, environ={"HEARTH_PROT": "9"})


def test_secret_references_are_found_anywhere() -> None:
    values = {"a": "env:ONE", "b": {"c": ["x", "env:TWO", {"d": "env:THREE"}]}, "e": "env:"}
    assert secret_references(values) == {"ONE", "TWO", "THREE"}
