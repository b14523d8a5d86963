"""A real nginx load balancer in front of `hearth serve` replicas, for the scale tests.

Everything nginx writes (config, pid, logs, temp files) lives in a folder of the test's; it runs
in the foreground on a free loopback port and is stopped by pid. Each answer carries
`x-upstream`: the replica (or replicas, comma-separated, when nginx tried more than one) that
nginx sent it to, so a test can see how requests were spread.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from support.ports import free_port

UPSTREAM_HEADER = "x-upstream"


def find_nginx() -> Path | None:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate is not None and Path(candidate).is_file():
            return Path(candidate)
    return None


def balancer_config(root: Path, port: int, replicas: Sequence[int]) -> str:
    """nginx as the Compose `replicas` profile's Caddy is used: fewest requests in flight first,
    keep-alive to the replicas, streams passed through unbuffered.

    Retries: a request nginx could not hand to a replica (connection refused: a dead replica)
    goes to the next one. A POST already sent is never resent (nginx's rule for non-idempotent
    methods, kept on purpose: the replica may have answered it and billed it), so the client
    gets 502 and decides. A dead replica is left alone for `fail_timeout` after one failure.
    Every timeout is bounded, so nothing waits forever on a replica that died mid-answer.
    """
    servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in replicas)
    temp = " ".join(
        f"{name}_temp_path {root / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
daemon off;
master_process on;
worker_processes 1;
pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
  log_format upstream '$request_time $status $upstream_addr $upstream_status $http_x_request_id';
  access_log {root / "access.log"} upstream;
  {temp}
  upstream hearth {{
    least_conn;
{servers}
    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://hearth;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_connect_timeout 2s;
      proxy_send_timeout 30s;
      proxy_read_timeout 30s;
      proxy_next_upstream error timeout http_502 http_503;
      proxy_next_upstream_tries 3;
      proxy_next_upstream_timeout 10s;
      add_header {UPSTREAM_HEADER} $upstream_addr always;
    }}
  }}
}}
"""


class Balancer:
    """nginx in front of the given replica ports, on a free 127.0.0.1 port."""

    def __init__(self, binary: Path, root: Path, replicas: Sequence[int]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.replicas = list(replicas)
        self.conf = root / "nginx.conf"
        self.conf.write_text(balancer_config(root, self.port, replicas))
        argv = [str(binary), "-p", str(root), "-e", str(root / "error.log"), "-c", str(self.conf)]
        with (root / "stderr.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def log(self) -> str:
        return (self.root / "error.log").read_text(errors="replace") if self.root.exists() else ""

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            try:
                httpx.get(f"{self.url}/health", timeout=2)  # any answer: nginx is listening
                return
            except httpx.TransportError:
                time.sleep(0.05)
        pytest.fail(f"nginx did not listen within {timeout}s:\n{self.log()}")

    def reconfigure(self, replicas: Sequence[int], timeout: float = 10.0) -> None:
        """Send to these replicas from now on: nginx reloads its config (SIGHUP), as in a rolling
        update; returns once a new worker has answered from a replica the old config lacked."""
        added = set(replicas) - set(self.replicas)
        self.replicas = list(replicas)
        self.conf.write_text(balancer_config(self.root, self.port, replicas))
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while added and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                answer = httpx.get(f"{self.url}/health", timeout=2)
                used = answer.headers.get(UPSTREAM_HEADER, "").split(",")[-1].rsplit(":", 1)[-1]
                if used.isdigit() and int(used) in added:
                    return
            time.sleep(0.05)
        if added:
            pytest.fail(f"nginx did not take its new config within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
