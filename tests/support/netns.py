"""Two hosts on one machine, for tests of Hearth across a network: two network namespaces joined
by a veth pair (the "LAN"), and a second veth from the test's own namespace to the server host so
the test can reach a server listening there. Needs root and iproute2's `ip`."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support.hearth_server import HearthServer
from support.ports import free_port


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str  # on the link between the two hosts

    def argv(self, *command: str) -> list[str]:
        """`command` run inside this host's namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace, *command]


@dataclass(frozen=True)
class TwoHosts:
    worker: Host
    server: Host
    server_address_from_here: str  # the server host's address on its link to the test


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "needs `ip` from iproute2 (make test installs it)"
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _free_subnet() -> str:
    """A 10.x.y.0/29 prefix no route of this machine uses (the test links take two /30s)."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for _ in range(100):
        prefix = f"10.{random.randint(200, 254)}.{random.randint(0, 255)}"
        if f"{prefix}." not in routes and "10.0.0.0/8" not in routes:
            return prefix
    raise OSError("no free 10.x.y.0/29 subnet for the test network")


@contextmanager
def two_hosts() -> Iterator[TwoHosts]:
    """Create the hosts; everything is deleted at the end, also after a failure part-way."""
    tag = secrets.token_hex(3)
    worker_ns, server_ns = f"hearth-rpc-{tag}-w", f"hearth-rpc-{tag}-s"
    # Interface names have at most 15 characters.
    lan_w, lan_s, up_here, up_s = f"hw{tag}", f"hs{tag}", f"hh{tag}", f"hb{tag}"
    prefix = _free_subnet()
    made: list[str] = []
    try:
        for namespace in (worker_ns, server_ns):
            _ip("netns", "add", namespace)
            made.append(namespace)
            _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("link", "add", lan_w, "netns", worker_ns, "type", "veth", "peer", lan_s, "netns",
            server_ns)  # fmt: skip
        _ip("link", "add", up_here, "type", "veth", "peer", up_s, "netns", server_ns)
        for namespace, device, address in (
            (worker_ns, lan_w, f"{prefix}.1/30"),
            (server_ns, lan_s, f"{prefix}.2/30"),
            (None, up_here, f"{prefix}.5/30"),
            (server_ns, up_s, f"{prefix}.6/30"),
        ):
            where = ["-n", namespace] if namespace else []
            _ip(*where, "addr", "add", address, "dev", device)
            _ip(*where, "link", "set", device, "up")
        yield TwoHosts(
            worker=Host(worker_ns, f"{prefix}.1"),
            server=Host(server_ns, f"{prefix}.2"),
            server_address_from_here=f"{prefix}.6",
        )
    finally:
        # Deleting a namespace deletes the veths in it, and with them their peers here.
        for namespace in made:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", up_here], capture_output=True, check=False)


def listening(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on `port` in the network namespace of process `pid`."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
            return True
    return False


class NamespacedHearth(HearthServer):
    """A real `hearth serve` inside `host`'s namespace, listening on `address` there (which
    the test reaches over its own link); no keys, since it binds beyond loopback."""

    def __init__(
        self, host: Host, address: str, data_dir: Path, env: dict[str, str], args: Sequence[str]
    ) -> None:
        self.data_dir = data_dir
        self.env = env
        self.port = free_port()  # free here, and surely in the fresh namespace
        self.base_url = f"http://{address}:{self.port}"
        self.log_path = data_dir / "hearth-serve.log"
        self._client = None
        argv = host.argv(sys.executable, "-m", "hearth", "serve", "--host", address)
        argv += ["--port", str(self.port), "--no-auth", "--data-dir", str(data_dir), *args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
