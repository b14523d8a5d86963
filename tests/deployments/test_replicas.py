"""A model's replicas from its settings: counts and their checks, each replica's launcher pinned
to its own cores with threads to match, and the idle time of extra replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.deployments import build, replicas
from hearth.deployments.build import build_catalogue
from hearth.deployments.deployment import LocalDeployment
from hearth.engines.gpu import Accelerators
from hearth.engines.placement import PinnedLauncher
from hearth.errors import ConfigError
from hearth.settings_layers import load_settings


@pytest.fixture(autouse=True)
def four_cores_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same machine wherever the test runs (this one may have 2 cores, or a GPU)."""
    monkeypatch.setattr(replicas, "usable_cpus", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(build, "detect_accelerators", lambda: Accelerators("none"))


def model(tmp_path: Path, entry: str, top: str = "") -> LocalDeployment:
    config = tmp_path / "hearth.yaml"
    config.write_text(f"{top}models:\n  m:\n    model: gemma-3-270m\n{entry}")
    settings = load_settings(config, environ={})
    catalogue = build_catalogue(settings, tmp_path / "llama-server", tmp_path / "bundled.gguf")
    return catalogue.local("m")


def argv(deployment: LocalDeployment, index: int) -> list[str]:
    return deployment.replica_launcher(index).command("127.0.0.1", 1).argv


def test_fixed_replicas_get_disjoint_cores_and_threads_to_match(tmp_path: Path) -> None:
    deployment = model(tmp_path, "    replicas: 2\n")
    assert (deployment.replicas.min, deployment.replicas.max) == (2, 2)
    assert not deployment.replicas.autoscaled
    commands = [deployment.replica_launcher(i).command("127.0.0.1", 1) for i in (0, 1)]
    assert [c.cpus for c in commands] == [frozenset({0, 1}), frozenset({2, 3})]
    for command in commands:
        assert command.argv[command.argv.index("--threads") + 1] == "2"
    assert isinstance(deployment.replica_launcher(1), PinnedLauncher)
    # The deployment's own launcher (capabilities, request quirks) is the unpinned one.
    assert "--threads" not in deployment.launcher.command("127.0.0.1", 1).argv


def test_threads_set_in_the_settings_are_kept(tmp_path: Path) -> None:
    def threads(entry: str, top: str = "") -> str:
        command = argv(model(tmp_path, entry, top), 1)
        return command[command.index("--threads") + 1]

    assert threads("    replicas: 2\n    threads: 3\n") == "3"
    assert threads("    replicas: 2\n", top="engine:\n  threads: 1\n") == "1"


def test_one_replica_is_the_model_as_before(tmp_path: Path) -> None:
    deployment = model(tmp_path, "")
    assert (deployment.replicas.min, deployment.replicas.max) == (1, 1)
    assert deployment.replicas.launchers == ()
    assert deployment.replica_launcher(0) is deployment.launcher


def test_autoscaling_range_routing_and_idle_time(tmp_path: Path) -> None:
    scaled = model(tmp_path, "    min_replicas: 1\n    max_replicas: 3\n    keep_alive: 0\n")
    assert (scaled.replicas.min, scaled.replicas.max, scaled.replicas.idle) == (1, 3, 300.0)
    assert scaled.replicas.autoscaled and len(scaled.replicas.launchers) == 3
    assert scaled.replicas.routing == "affinity"
    tuned = model(
        tmp_path,
        "    max_replicas: 2\n    replica_keep_alive: 10s\n    replica_routing: round_robin\n",
    )
    assert (tuned.replicas.min, tuned.replicas.idle, tuned.replicas.routing) == (
        1,
        10.0,
        "round_robin",
    )
    assert model(tmp_path, "    max_replicas: 2\n    keep_alive: 2m\n").replicas.idle == 120.0


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("    replicas: 2\n    max_replicas: 3\n", "not both"),
        ("    min_replicas: 2\n", "min_replicas needs max_replicas"),
        ("    min_replicas: 3\n    max_replicas: 2\n", "more than max_replicas"),
        ("    replicas: 0\n", "greater than or equal to 1"),
        ("    replica_routing: random\n", "affinity"),
    ],
)
def test_replica_settings_are_checked(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        model(tmp_path, entry)
