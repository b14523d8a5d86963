"""Settings layering (file < environment < flags) and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.config import Settings, parse_duration
from hearth.errors import ConfigError
from hearth.settings_layers import load_settings, read_environment


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_bind_loopback_8080_and_use_the_xdg_data_dir(tmp_path: Path) -> None:
    settings = load_settings(environ={})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.data_dir == tmp_path / "xdg-data" / "hearth"  # XDG_DATA_HOME set by conftest


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path) -> None:
    config = write(tmp_path / "hearth.yaml", "port: 7000\nhost: 0.0.0.0\nengine:\n  parallel: 2\n")
    env = {"HEARTH_PORT": "7100", "HEARTH_ENGINE__CTX_SIZE": "4096"}

    from_file_and_env = load_settings(config, environ=env)
    assert from_file_and_env.port == 7100
    assert from_file_and_env.host == "0.0.0.0"
    # Nested values merge instead of replacing the whole section.
    assert from_file_and_env.engine.parallel == 2
    assert from_file_and_env.engine.ctx_size == 4096

    with_flags = load_settings(config, environ=env, port=7200, host=None)
    assert with_flags.port == 7200
    assert with_flags.host == "0.0.0.0"  # a flag left unset does not override


def test_unknown_key_in_file_is_an_error_naming_it(tmp_path: Path) -> None:
    config = write(tmp_path / "hearth.yaml", "engine:\n  paralel: 4\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'engine\.paralel' in .*hearth\.yaml"):
        load_settings(config, environ={})


def test_unknown_environment_variable_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'HEARTH_PROT' in environment"):
        load_settings(environ={"HEARTH_PROT": "9000"})


def test_invalid_value_names_key_and_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"port: .*'eighty'.*from environment"):
        load_settings(environ={"HEARTH_PORT": "eighty"})
    config = write(tmp_path / "c.yaml", "engine:\n  parallel: 0\n")
    with pytest.raises(
        ConfigError, match=r"engine\.parallel: .*greater than or equal to 1.*c\.yaml"
    ):
        load_settings(config, environ={})


def test_config_file_problems_are_reported_plainly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path / "bad.yaml", "port: [1,\n"), environ={})
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(write(tmp_path / "list.yaml", "- 1\n- 2\n"), environ={})
    assert load_settings(write(tmp_path / "empty.yaml", ""), environ={}) == Settings()


def test_environment_json_values_set_lists() -> None:
    values = read_environment({"HEARTH_ENGINE__EXTRA_ARGS": '["--mlock"]', "OTHER": "x"})
    assert values == {"engine": {"extra_args": ["--mlock"]}}
    settings = load_settings(environ={"HEARTH_ENGINE__EXTRA_ARGS": '["--mlock"]'})
    assert settings.engine.extra_args == ["--mlock"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300.0), ("30s", 30.0), ("1h", 3600.0), ("250ms", 0.25), ("90", 90.0), ("-1", -1.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_model_entries_inherit_engine_settings_and_check_their_keys(tmp_path: Path) -> None:
    config = write(
        tmp_path / "m.yaml",
        "engine:\n  parallel: 4\n  threads: 2\nmodels:\n  small:\n    model: gemma-3-270m\n"
        "    parallel: 1\n    keep_alive: 10m\n",
    )
    settings = load_settings(config, environ={})
    small = settings.models["small"]
    assert small.keep_alive == 600.0
    engine = small.engine_settings(settings.engine)
    assert (engine.parallel, engine.threads) == (1, 2)
    assert settings.keep_alive == 300.0
    assert settings.preload == ["gemma-3-270m"]

    typo = write(tmp_path / "t.yaml", "models:\n  small:\n    model: x\n    paralel: 1\n")
    with pytest.raises(ConfigError, match=r"models\.small\.paralel"):
        load_settings(typo, environ={})
    bad = write(tmp_path / "b.yaml", "models:\n  small:\n    model: x\n    keep_alive: soon\n")
    with pytest.raises(ConfigError, match=r"models\.small\.keep_alive: .*not a duration"):
        load_settings(bad, environ={})
