"""The catalogue across a settings reload: what a deployment has been through stays, the new
breaker thresholds apply."""

from __future__ import annotations

from hearth.config import BreakerSettings
from hearth.deployments.breaker import BreakerState
from hearth.deployments.catalogue import Catalogue
from hearth.deployments.deployment import RemoteDeployment
from hearth.engines.base import Capabilities


def catalogue_with(name: str, breaker: BreakerSettings) -> Catalogue:
    catalogue = Catalogue(breaker)
    catalogue.add(RemoteDeployment(name, f"http://{name}/v1", name, Capabilities(chat=True)))
    return catalogue


def test_a_reload_keeps_the_breaker_state_and_applies_the_new_thresholds() -> None:
    before = catalogue_with("cloud", BreakerSettings(failures=5, window=60, cooldown=30))
    kept = before.deployment("cloud")
    assert kept is not None
    for _ in range(2):
        kept.stats.breaker.record_failure()
    kept.stats.ttft = 0.25

    after = catalogue_with("cloud", BreakerSettings(failures=3, window=10, cooldown=2))
    after.carry_over(before)
    deployment = after.deployment("cloud")
    assert deployment is not None
    assert deployment.stats.ttft == 0.25  # the latency average came along
    breaker = deployment.stats.breaker
    assert (breaker.threshold, breaker.window, breaker.cooldown) == (3, 10, 2)
    breaker.record_failure()  # the third failure: open under the new threshold, not the old 5
    assert breaker.state is BreakerState.OPEN


def test_a_deployment_new_to_the_settings_starts_afresh() -> None:
    before = catalogue_with("x", BreakerSettings())
    old = before.deployment("x")
    assert old is not None
    old.stats.ttft = 1.0
    after = Catalogue(BreakerSettings())
    after.add(RemoteDeployment("y", "http://y/v1", "y", Capabilities(chat=True)))
    after.carry_over(before)
    new = after.deployment("y")
    assert new is not None and new.stats.ttft is None
