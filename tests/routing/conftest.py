"""A scripted upstream and a Hearth gateway in front of it, shared by the gateway tests.

Each test uses deployments of its own, so scripts, breakers and counters never mix."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream

UPSTREAM_KEY = "sk-upstream-secret-7f3a9c"


PLAIN_DEPLOYMENTS = (
    "fb1", "fb2", "fb3", "retry", "retry429", "retrystream", "drop", "dropbackup", "bad",
    "badbackup", "brk", "brkbackup", "wa", "wb", "tools", "cached", "all1", "all2",
    "hangbackup", "lat_slow", "lat_fast", "lb1", "lb2", "nousage", "stall",
)  # fmt: skip

# Settings of deployments that need more than a URL.
SPECIAL_DEPLOYMENTS = {
    "plain": (
        "model: upstream-name\n"
        "api_key: env:TEST_UPSTREAM_KEY\n"
        "headers: {x-team: blue}\n"
        "aliases: [gpt-4o-mini]\n"
    ),
    "hang": "timeouts: {first_token: 0.5}\n",
    "imp": "import_models: true\n",
    "cheap": "price: {input: 0.1, output: 0.2}\n",
    "pricey": "price: {input: 5, output: 15}\n",
}

ROUTES = """\
routes:
  chain: {deployments: [fb1, fb2, fb3]}
  dropchain: {deployments: [drop, dropbackup]}
  badchain: {deployments: [bad, badbackup]}
  brkchain: {deployments: [brk, brkbackup]}
  split:
    strategy: weighted
    deployments: [{deployment: wa, weight: 80}, {deployment: wb, weight: 20}]
  allfail: {deployments: [all1, all2, closed2]}
  hangchain: {deployments: [hang, hangbackup]}
  closedchain: {deployments: [closed, hangbackup]}
  fastest: {strategy: lowest-latency, deployments: [lat_slow, lat_fast]}
  thrifty: {strategy: lowest-cost, deployments: [pricey, cheap]}
  idle: {strategy: least-busy, deployments: [lb1, lb2]}
"""


def gateway_config(upstream: ScriptedUpstream) -> str:
    lines = [
        "preload: []",
        "routing:",
        "  retries: 1",
        "  backoff: 0.02",
        "  backoff_max: 1",
        "  health_check_interval: 0",
        "  breaker: {failures: 3, window: 60, cooldown: 1.5}",
        "cache: {enabled: true, ttl: 60}",
        "deployments:",
        # Nothing listens on the discard port: connections are refused.
        "  closed: {url: 'http://127.0.0.1:9/v1', timeouts: {connect: 0.5}}",
        "  closed2: {url: 'http://127.0.0.1:9/v1', timeouts: {connect: 0.5}}",
    ]
    for name in (*PLAIN_DEPLOYMENTS, *SPECIAL_DEPLOYMENTS):
        lines.append(f"  {name}:\n    url: {upstream.url(name)}")
        lines += ["    " + line for line in SPECIAL_DEPLOYMENTS.get(name, "").splitlines()]
    return "\n".join(lines) + "\n" + ROUTES


@pytest.fixture(scope="module")
def gateway(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    config: Path = tmp_path_factory.mktemp("gateway") / "hearth.yaml"
    config.write_text(gateway_config(upstream))
    return start_hearth("--config", str(config), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
