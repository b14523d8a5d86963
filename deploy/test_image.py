#!/usr/bin/env python3
"""Build Hearth's container image and test it in a real Docker daemon (`make test-image`).

Not part of `make test`: building the image compiles llama.cpp (20-30 minutes on 2 cores with
Docker's vfs storage). Standard library only, so it runs with the system's python3.

What it checks, each step timed:
  - the image runs as uid 10001 with a /data volume, a HEALTHCHECK and `hearth serve` as PID 1;
  - started with no admin key and no keys on its default 0.0.0.0 bind, it refuses to serve;
  - with a mounted config file (HEARTH_CONFIG) and HEARTH_* variables it serves: /ready, the
    health check turns healthy, the bundled model is assembled into the volume on first start;
  - a chat completion is answered with a key made in the container (`hearth keys create`);
  - that key still works from a new container on the same volume, run as Compose and the
    Kubernetes manifests run it (read-only root filesystem, a tmpfs /tmp, no capabilities);
  - `docker stop` (SIGTERM) during a streamed completion ends the stream cleanly (an error event
    then [DONE], or the whole answer), Hearth exits by itself before Docker's kill, and the usage
    row of that request is in the SQLite database on the volume.

On a machine without a registry (as in Hearth's CI), `--debootstrap` builds a Debian base image
with debootstrap (hearth-base:bookworm) instead of pulling python:3.11-slim-bookworm, and
`--start-dockerd` runs a private dockerd (vfs storage, no bridge: containers and builds use the
host network) under a temporary directory, stopped and removed at the end. Behind a
TLS-intercepting proxy, --ca-certs hands its CA to the builder stage:

    python3 deploy/test_image.py --start-dockerd --debootstrap \
        --ca-certs /usr/local/share/ca-certificates/*.crt
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEBOOTSTRAP_IMAGE = "hearth-base:bookworm"
MODEL = "gemma-3-270m"
UID = 10001


class Failed(Exception):
    pass


class Steps:
    """Named, timed steps; a summary table at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, str]] = []
        self.failed = False

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        notes: list[str] = []
        print(f"\n==> {name}", flush=True)
        start = time.monotonic()
        try:
            yield notes
        except BaseException as exc:
            elapsed = time.monotonic() - start
            self.rows.append((name, elapsed, f"FAILED: {exc}"))
            self.failed = True
            print(f"<== FAILED after {elapsed:.1f} s: {exc}", flush=True)
            raise
        elapsed = time.monotonic() - start
        self.rows.append((name, elapsed, "; ".join(notes)))
        print(f"<== ok, {elapsed:.1f} s{': ' + '; '.join(notes) if notes else ''}", flush=True)

    def summary(self) -> str:
        lines = ["| step | time | result |", "|---|---:|---|"]
        for name, elapsed, note in self.rows:
            lines.append(f"| {name} | {_duration(elapsed)} | {note or 'ok'} |")
        total = sum(elapsed for _, elapsed, _ in self.rows)
        lines.append(f"| **total** | **{_duration(total)}** | |")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


# ---------------------------------------------------------------------------------------------
# Docker


class Docker:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(
        self, *args: str, check: bool = True, timeout: float = 600, quiet: bool = False
    ) -> subprocess.CompletedProcess[str]:
        if not quiet:
            print("   $ docker " + " ".join(args), flush=True)
        result = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise Failed(
                f"docker {args[0]} exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result

    def stream(self, *args: str, log: Path, timeout: float) -> None:
        """Run a long command (a build), its output to `log` and the terminal."""
        shown = [arg if len(arg) < 200 else arg[:40] + "…" for arg in args]
        print("   $ docker " + " ".join(shown), flush=True)
        with log.open("w") as out:
            proc = subprocess.Popen(
                ["docker", *args], env=self.env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, bufsize=1,
            )  # fmt: skip
            assert proc.stdout is not None
            deadline = time.monotonic() + timeout
            for line in proc.stdout:
                out.write(line)
                if line.startswith("Step ") or "%" in line or "built " in line:
                    print("   " + line.rstrip()[:160], flush=True)
                if time.monotonic() > deadline:
                    proc.kill()
                    raise Failed(f"timed out after {timeout:.0f} s; see {log}")
            if proc.wait() != 0:
                tail = log.read_text().splitlines()[-30:]
                raise Failed(f"exited {proc.returncode}; see {log}:\n" + "\n".join(tail))

    def exists(self, image: str) -> bool:
        return self.run("image", "inspect", image, check=False, quiet=True).returncode == 0

    def inspect(self, what: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.run("inspect", what, quiet=True).stdout)[0]
        return result


@contextlib.contextmanager
def private_dockerd(
    root: Path | None,
    keep: bool,
    network_flags: tuple[str, ...] = ("--iptables=false", "--bridge=none"),
    nice: bool = False,
) -> Iterator[dict[str, str]]:
    """A dockerd of our own: its socket, data root and exec root under one directory.

    `nice`: the daemon and everything it starts (builds, containers) at the lowest CPU and I/O
    priority, for a machine shared with other work.
    """
    if os.geteuid() != 0:
        raise Failed("--start-dockerd needs root (dockerd does)")
    if shutil.which("dockerd") is None:
        raise Failed("dockerd not found: apt-get install docker.io")
    base = root or Path(tempfile.mkdtemp(prefix="hearth-dockerd-"))
    base.mkdir(parents=True, exist_ok=True)
    sock = base / "docker.sock"
    log = (base / "dockerd.log").open("a")
    argv = [
        "dockerd", "--storage-driver=vfs", *network_flags,
        f"--data-root={base / 'docker'}", f"--exec-root={base / 'exec'}",
        f"--pidfile={base / 'dockerd.pid'}", "-H", f"unix://{sock}",
    ]  # fmt: skip
    if nice:
        argv = ["nice", "-n", "19", "ionice", "-c3", *argv]
    print("   $ " + " ".join(argv), flush=True)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            ready = subprocess.run(["docker", "version"], env=env, capture_output=True)
            if ready.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Failed(f"dockerd did not start; see {base / 'dockerd.log'}")
            time.sleep(0.5)
        print(f"   dockerd pid {proc.pid}, DOCKER_HOST=unix://{sock}", flush=True)
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        print(f"   dockerd (pid {proc.pid}) stopped", flush=True)
        if keep or root is not None:
            print(f"   kept {base} (its images make a rerun fast)", flush=True)
        else:
            # dockerd leaves its network namespace mounted under the exec root.
            for mount in sorted(_mounts_under(base), reverse=True):
                subprocess.run(["umount", mount], check=False)
            subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)
            print(f"   removed {base}", flush=True)


def _mounts_under(base: Path) -> list[str]:
    prefix = str(base.resolve()) + "/"
    with open("/proc/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt").glob("sources.list.d/*.list")]:
        if path.is_file():
            for line in path.read_text().splitlines():
                match = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
                if match:
                    return match.group(1)
    return "http://deb.debian.org/debian"


def debootstrap_base(docker: Docker, mirror: str, notes: list[str]) -> None:
    if docker.exists(DEBOOTSTRAP_IMAGE):
        notes.append(f"{DEBOOTSTRAP_IMAGE} already there")
        return
    if shutil.which("debootstrap") is None:
        raise Failed("debootstrap not found: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(prefix="hearth-rootfs-") as rootfs:
        argv = ["debootstrap", "--variant=minbase", "bookworm", rootfs, mirror]
        print("   $ " + " ".join(argv), flush=True)
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise Failed(f"debootstrap failed: {result.stdout[-1500:]}{result.stderr[-1500:]}")
        # The image's / is this directory: mkdtemp made it 0700, which would lock every user
        # but root out of the whole filesystem.
        os.chmod(rootfs, 0o755)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import", "-", DEBOOTSTRAP_IMAGE], stdin=tar.stdout, env=docker.env,
            capture_output=True, text=True,
        )  # fmt: skip
        tar.wait()
        if imported.returncode != 0:
            raise Failed(f"docker import failed: {imported.stderr}")
    notes.append(f"debootstrap bookworm minbase from {mirror} → {DEBOOTSTRAP_IMAGE}")


# ---------------------------------------------------------------------------------------------
# HTTP


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    key: str | None = None,
    timeout: float = 60,
) -> tuple[int, dict[str, Any]]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}


def wait_ready(port: int, container: str, docker: Docker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            status, _ = http_json("GET", f"http://127.0.0.1:{port}/ready", timeout=5)
            if status == 200:
                return
        state = docker.inspect(container)["State"]
        if not state["Running"]:
            logs = docker.run("logs", "--tail", "40", container, check=False, quiet=True)
            raise Failed(
                f"container exited ({state['ExitCode']}) before /ready:\n{logs.stdout}{logs.stderr}"
            )
        time.sleep(1)
    raise Failed(f"/ready not 200 within {timeout:.0f} s")


def chat(port: int, key: str, notes: list[str]) -> None:
    """One chat completion with `key`: answered, with usage."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
    }
    deadline = time.monotonic() + 20  # a key made by the CLI counts within refresh_interval (5 s)
    while True:
        status, reply = http_json("POST", f"http://127.0.0.1:{port}/v1/chat/completions", body, key)
        if status != 401 or time.monotonic() > deadline:
            break
        time.sleep(1)
    if status != 200:
        raise Failed(f"chat completion: {status} {reply}")
    content = reply["choices"][0]["message"]["content"]
    usage = reply.get("usage") or {}
    if not usage.get("completion_tokens"):
        raise Failed(f"no usage in the answer: {reply}")
    notes.append(f"answered {usage['completion_tokens']} tokens: {content[:40]!r}")


def stream_lines(
    port: int, key: str, request_id: str, lines: list[str], started: threading.Event
) -> None:
    """A long streamed chat completion; its `data:` payloads into `lines`."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 1500,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(
            "POST", "/v1/chat/completions", body=json.dumps(body),
            headers={"content-type": "application/json", "authorization": f"Bearer {key}",
                     "x-request-id": request_id},
        )  # fmt: skip
        response = connection.getresponse()
        if response.status != 200:
            lines.append(f"HTTP {response.status}: {response.read()[:500]!r}")
            return
        content_events = 0
        while True:
            raw = response.readline()
            if not raw:
                break
            line = raw.decode().strip()
            if line.startswith("data: "):
                lines.append(line[6:])
                content_events += 1
                if content_events >= 5:
                    started.set()
    except (OSError, http.client.HTTPException) as exc:
        lines.append(f"transport error: {exc!r}")
    finally:
        connection.close()
        started.set()


# ---------------------------------------------------------------------------------------------
# The test


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="hearth:local", help="the image to build and test")
    parser.add_argument(
        "--base-image", default="python:3.11-slim-bookworm", help="BASE_IMAGE build argument"
    )
    parser.add_argument(
        "--debootstrap", action="store_true",
        help=f"build (or reuse) {DEBOOTSTRAP_IMAGE} with debootstrap and use it as BASE_IMAGE",
    )  # fmt: skip
    parser.add_argument("--mirror", default=None, help="Debian mirror (default: apt's own)")
    parser.add_argument("--start-dockerd", action="store_true", help="run a private dockerd")
    parser.add_argument(
        "--dockerd-root", type=Path, default=None,
        help="directory for the private dockerd (kept: its images make a rerun fast)",
    )  # fmt: skip
    parser.add_argument("--no-build", action="store_true", help="test the image as it is")
    parser.add_argument(
        "--build-arg", action="append", default=[], help="more build arguments (NAME=VALUE)"
    )
    parser.add_argument(
        "--ca-certs", nargs="+", type=Path, default=[],
        help="PEM files the builder trusts (EXTRA_CA_CERTS), behind a TLS-intercepting proxy",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep containers, volume, dockerd")
    args = parser.parse_args()

    steps = Steps()
    try:
        with contextlib.ExitStack() as stack:
            if args.start_dockerd or args.dockerd_root:
                with steps.step("start a private dockerd (vfs, host network)"):
                    env = stack.enter_context(private_dockerd(args.dockerd_root, args.keep))
            else:
                env = dict(os.environ)
            docker = Docker(env)
            run_test(docker, args, steps, stack)
    except (Failed, subprocess.TimeoutExpired) as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
    print("\n" + steps.summary())
    return 1 if steps.failed else 0


def run_test(
    docker: Docker, args: argparse.Namespace, steps: Steps, stack: contextlib.ExitStack
) -> None:
    base_image = args.base_image
    if args.debootstrap:
        with steps.step("base image: debootstrap (Debian bookworm minbase)") as notes:
            debootstrap_base(docker, args.mirror or apt_mirror(), notes)
        base_image = DEBOOTSTRAP_IMAGE

    if not args.no_build:
        with steps.step(f"build {args.image} (BASE_IMAGE={base_image})") as notes:
            build_args = [f"BASE_IMAGE={base_image}", *args.build_arg]
            if args.ca_certs:
                pem = "".join(path.read_text() for path in args.ca_certs)
                build_args.append(f"EXTRA_CA_CERTS={pem}")
                notes.append(f"builder trusts {', '.join(map(str, args.ca_certs))}")
            log = Path(tempfile.gettempdir()) / "hearth-image-build.log"
            docker.stream(
                "build", "--network", "host",
                *[item for arg in build_args for item in ("--build-arg", arg)],
                "-t", args.image, str(ROOT), log=log, timeout=3600,
            )  # fmt: skip
            notes.append(f"log: {log}")

    with steps.step("image configuration") as notes:
        config = docker.inspect(args.image)["Config"]
        size = docker.inspect(args.image)["Size"]
        notes.append(f"size {size / 1e6:.0f} MB")
        if config.get("User") != f"{UID}:{UID}":
            raise Failed(f"USER is {config.get('User')!r}, not {UID}:{UID}")
        if "/data" not in (config.get("Volumes") or {}):
            raise Failed(f"no /data volume: {config.get('Volumes')}")
        if not (config.get("Healthcheck") or {}).get("Test"):
            raise Failed("no HEALTHCHECK")
        if config.get("Entrypoint") != ["hearth"] or config.get("Cmd") != ["serve"]:
            raise Failed(f"entrypoint {config.get('Entrypoint')} {config.get('Cmd')}")
        if config.get("StopSignal") not in (None, "SIGTERM"):
            raise Failed(f"STOPSIGNAL {config.get('StopSignal')}")
        notes.append(f"user {config['User']}, volume /data, healthcheck, entrypoint hearth serve")

    tag = f"hearth-image-test-{secrets.token_hex(3)}"
    volume = f"{tag}-data"
    workdir = Path(tempfile.mkdtemp(prefix="hearth-image-test-"))
    containers: list[str] = []

    def cleanup() -> None:
        if args.keep:
            print(f"   kept containers {containers}, volume {volume}", flush=True)
            return
        for name in containers:
            docker.run("rm", "-f", name, check=False, quiet=True)
        docker.run("volume", "rm", "-f", volume, check=False, quiet=True)
        shutil.rmtree(workdir, ignore_errors=True)

    stack.callback(cleanup)

    with steps.step("default start without keys refuses the 0.0.0.0 bind") as notes:
        result = docker.run("run", "--rm", "--network", "host", args.image, check=False)
        output = result.stdout + result.stderr
        if result.returncode == 0 or "refusing to listen on 0.0.0.0" not in output:
            raise Failed(f"expected a refusal, got exit {result.returncode}: {output[-800:]}")
        notes.append(f"exit {result.returncode}: {output.strip().splitlines()[-1][:110]}")

    admin_key = secrets.token_hex(24)
    port = free_port()
    config_file = workdir / "hearth.yaml"
    config_file.write_text(
        "# mounted at /etc/hearth/hearth.yaml, read through HEARTH_CONFIG\n"
        "auth:\n  admin_key: env:HEARTH_ADMIN_KEY\n"
        "shutdown_drain: 3\n"
        "engine: {parallel: 2, ctx_size: 4096}\n"
    )
    config_file.chmod(0o644)
    workdir.chmod(0o755)

    def start(name: str, *hardening: str) -> None:
        containers.append(name)
        docker.run(
            "run", "-d", "--name", name, "--network", "host", *hardening,
            "-v", f"{volume}:/data",
            "-v", f"{config_file}:/etc/hearth/hearth.yaml:ro",
            "-e", "HEARTH_CONFIG=/etc/hearth/hearth.yaml",
            "-e", f"HEARTH_PORT={port}",
            "-e", f"HEARTH_ADMIN_KEY={admin_key}",
            "--health-interval", "2s", "--health-start-period", "5s",
            args.image,
        )  # fmt: skip

    first = f"{tag}-1"
    with steps.step("first start: model assembled into the volume, engine loaded (/ready)") as n:
        start(first)
        wait_ready(port, first, docker, timeout=300)
        models = docker.run("exec", first, "ls", "-ln", "/data/models", quiet=True).stdout
        if ".gguf" not in models or f" {UID} {UID} " not in models:
            raise Failed(f"/data/models: {models}")
        ggufs = sorted(word for word in models.split() if word.endswith(".gguf"))
        n.append(f"HEARTH_PORT={port}, config from HEARTH_CONFIG; /data/models: {', '.join(ggufs)}")

    with steps.step("runs as non-root; hearth serve is PID 1") as notes:
        uid = docker.run("exec", first, "id", "-u", quiet=True).stdout.strip()
        proc_status = docker.run("exec", first, "cat", "/proc/1/status", quiet=True).stdout
        cmdline = docker.run("exec", first, "cat", "/proc/1/cmdline", quiet=True).stdout
        uids = re.search(r"^Uid:\s+(.*)$", proc_status, re.M)
        if uid != str(UID) or not uids or set(uids.group(1).split()) != {str(UID)}:
            raise Failed(f"id -u {uid}; /proc/1 Uid {uids and uids.group(1)}")
        argv = cmdline.split("\0")
        if not any(arg.endswith("/hearth") for arg in argv) or "serve" not in argv:
            raise Failed(f"PID 1 is {argv}")
        notes.append(
            f"id -u {uid}; PID 1 Uid {' '.join(uids.group(1).split())}; "
            f"PID 1 {' '.join(argv).strip()}"
        )

    with steps.step("HEALTHCHECK turns healthy") as notes:
        deadline = time.monotonic() + 60
        while (health := docker.inspect(first)["State"]["Health"]["Status"]) != "healthy":
            if time.monotonic() > deadline:
                raise Failed(f"health is {health}")
            time.sleep(1)
        notes.append("healthy")

    with steps.step("keys: none presented → 401; `hearth keys create` in the container") as notes:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        status, _ = http_json("POST", url, {"model": MODEL, "messages": []})
        if status != 401:
            raise Failed(f"no key: {status}, not 401")
        created = docker.run("exec", first, "hearth", "keys", "create", "--name", "image-test")
        key = created.stdout.strip().splitlines()[-1]
        if not key.startswith("hk_"):
            raise Failed(f"keys create printed {created.stdout!r}")
        notes.append(f"key {key[:11]}… created")

    with steps.step("chat completion with that key") as notes:
        chat(port, key, notes)

    second = f"{tag}-2"
    with steps.step("new container on the same volume, read-only root: the key still works") as n:
        docker.run("stop", "-t", "30", first)
        docker.run("rm", first, quiet=True)
        # As deploy/compose.yaml and the Kubernetes manifests run it: nothing but /data and /tmp
        # writable, no capabilities.
        start(
            second, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges",
        )  # fmt: skip
        wait_ready(port, second, docker, timeout=300)
        chat(port, key, n)
        n.append("--read-only --tmpfs /tmp --cap-drop ALL")

    with steps.step("SIGTERM (docker stop) during a streamed completion") as notes:
        request_id = f"image-test-{secrets.token_hex(6)}"
        lines: list[str] = []
        started = threading.Event()
        reader = threading.Thread(target=stream_lines, args=(port, key, request_id, lines, started))
        reader.start()
        if not started.wait(60):
            raise Failed("the stream did not start")
        stop_start = time.monotonic()
        docker.run("stop", "-t", "30", second)
        stopped_in = time.monotonic() - stop_start
        reader.join(60)
        state = docker.inspect(second)["State"]
        if not lines or lines[-1] != "[DONE]":
            raise Failed(f"the stream did not end with [DONE]: {lines[-3:]}")
        events = [json.loads(line) for line in lines[:-1]]
        errors = [e for e in events if "error" in e]
        if errors:
            # The error event ends the stream: at most the usage chunk after it, then [DONE].
            if errors[-1]["error"].get("code") != "shutting_down" or errors[-1] not in events[-2:]:
                raise Failed(f"unexpected error event: {errors[-1]} (last: {lines[-3:]})")
            ending = f"error event {errors[-1]['error']['code']!r} then [DONE]"
        elif any(c.get("finish_reason") for e in events for c in e.get("choices", [])):
            ending = "complete (finish_reason) then [DONE]"
        else:
            raise Failed(f"[DONE] without an error event or a finish_reason: {lines[-3:]}")
        if state["ExitCode"] == 137 or state.get("OOMKilled"):
            raise Failed(f"killed, not drained: exit {state['ExitCode']}")
        if stopped_in >= 29:
            raise Failed(f"docker stop took {stopped_in:.1f} s: Docker had to kill it")
        content = sum(1 for e in events if any(c.get("delta", {}).get("content")
                                               for c in e.get("choices", [])))  # fmt: skip
        notes.append(
            f"{content} content events, {ending}; stopped in {stopped_in:.1f} s, "
            f"exit {state['ExitCode']}"
        )

    with steps.step("usage row of the cut stream is in the database on the volume") as notes:
        query = (
            "import json, sqlite3, sys; db = sqlite3.connect('/data/hearth.db'); "
            "rows = db.execute('SELECT request_id, status, prompt_tokens, completion_tokens "
            "FROM usage ORDER BY id').fetchall(); "
            "from pathlib import Path; "
            "journal = [p.name for p in Path('/data/usage-journal').glob('*') "
            "if p.stat().st_size]; "
            "print(json.dumps({'rows': rows, 'journal': journal}))"
        )
        result = docker.run(
            "run", "--rm", "--network", "none", "-v", f"{volume}:/data", "--entrypoint", "python3",
            args.image, "-c", query,
        )  # fmt: skip
        found = json.loads(result.stdout)
        rows = found["rows"]
        mine = [row for row in rows if row[0] == request_id]
        if len(mine) != 1:
            raise Failed(f"usage rows for {request_id}: {mine} (all: {rows})")
        _, status, prompt_tokens, completion_tokens = mine[0]
        if status not in (200, 503) or completion_tokens < 5:
            raise Failed(f"usage row {mine[0]}")
        chats = [row for row in rows if row[0] != request_id and row[1] == 200]
        notes.append(
            f"status {status}, {prompt_tokens} prompt + {completion_tokens} completion tokens; "
            f"{len(chats)} earlier chat rows; journal files left: {len(found['journal'])}"
        )


if __name__ == "__main__":
    sys.exit(main())
