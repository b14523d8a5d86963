"""Remote deployments and routes from the settings: names, secrets, mistakes named."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.test_build import catalogue_for
from hearth.deployments.deployment import RemoteDeployment
from hearth.errors import ConfigError
from hearth.secrets import resolve_secret

DEPLOYMENT = "deployments:\n  cloud:\n    url: https://api.example.com/v1/\n"


def test_a_remote_deployment_is_a_public_name_with_its_aliases(tmp_path: Path) -> None:
    catalogue = catalogue_for(
        tmp_path, DEPLOYMENT + "    model: gpt-4o-mini\n    aliases: [mini]\n"
    )
    route = catalogue.resolve("mini")
    assert route.name == "cloud" and route.local is None
    deployment = route.targets[0].deployment
    assert isinstance(deployment, RemoteDeployment)
    assert deployment.url == "https://api.example.com/v1"  # trailing slash dropped
    assert deployment.model == "gpt-4o-mini"
    assert catalogue.remotes() == [deployment]


def test_a_route_mixes_local_models_and_remote_deployments(tmp_path: Path) -> None:
    catalogue = catalogue_for(
        tmp_path,
        DEPLOYMENT + "routes:\n  assistant:\n    strategy: weighted\n    aliases: [gpt-4o]\n"
        "    deployments: [gemma-3-270m, {deployment: cloud, weight: 0.1}]\n",
    )
    route = catalogue.resolve("gpt-4o")
    assert route.strategy == "weighted"
    assert [(t.deployment.name, t.weight) for t in route.targets] == [
        ("gemma-3-270m", 1.0),
        ("cloud", 0.1),
    ]
    assert route.capabilities() == ["chat", "completion", "tools"]


def test_api_keys_are_read_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUD_KEY", "sk-from-env")
    assert resolve_secret("env:CLOUD_KEY", "x").reveal() == "sk-from-env"
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    secret = resolve_secret(f"file:{key_file}", "x")
    assert secret.reveal() == "sk-from-file"
    assert "sk-from-file" not in repr(secret) and "sk-from-file" not in str(secret)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            DEPLOYMENT + "    api_key: env:HEARTH_TEST_MISSING_KEY\n",
            r"deployments\.cloud\.api_key: the environment variable HEARTH_TEST_MISSING_KEY "
            "is not set",
        ),
        (
            DEPLOYMENT + "    api_key: file:/nonexistent/key\n",
            r"deployments\.cloud\.api_key: cannot read /nonexistent/key",
        ),
        (
            DEPLOYMENT + "routes:\n  r: {deployments: [cloud, ghost]}\n",
            r"routes\.r: 'ghost' is neither a local model nor a deployment; known: cloud, "
            "gemma-3-270m",
        ),
        (DEPLOYMENT + "routes:\n  cloud: {deployments: [cloud]}\n", "used twice"),
        (
            DEPLOYMENT + "routes:\n  r: {strategy: weighted, deployments: "
            "[{deployment: cloud, weight: 0}]}\n",
            "a weighted route needs a weight above 0",
        ),
        (DEPLOYMENT + "    aliases: [gemma-3-270m]\n", "used twice"),
        ("deployments:\n  x:\n    url: ftp://nope\n", r"deployments\.x\.url"),
        (DEPLOYMENT + "routes:\n  r: {strategy: fastest, deployments: [cloud]}\n", "strategy"),
        (DEPLOYMENT + "routes:\n  r: {deployments: []}\n", "deployments"),
    ],
)
def test_config_mistakes_are_named(tmp_path: Path, yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        catalogue_for(tmp_path, yaml_text)


def test_the_secret_never_appears_in_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUD_KEY", "sk-very-secret")
    with pytest.raises(ConfigError) as raised:
        catalogue_for(
            tmp_path,
            DEPLOYMENT + "    api_key: env:CLOUD_KEY\n    timeouts: {connect: -1}\n",
        )
    assert "sk-very-secret" not in str(raised.value)
