"""Free TCP ports for engine processes (and the other servers Hearth starts on loopback).

Ports are taken below the kernel's ephemeral range where there is room: a port from the range
(what binding to port 0 gives) can be taken, between choosing it and the engine binding it, by
any outgoing connection — Hearth's own to PostgreSQL, Redis or an upstream — and the engine then
fails to start with "address already in use" (seen in CI). Below the range only listeners
compete, and a port is chosen only if it could be bound a moment ago.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 20000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on `host` a moment ago. The engine may still lose a race for it; the
    supervisor then restarts it on another port."""
    first_ephemeral = _first_ephemeral()
    if first_ephemeral - LOWEST >= 1000:
        for _ in range(100):
            port = random.randrange(LOWEST, first_ephemeral)
            if _bindable(host, port):
                return port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _first_ephemeral() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; elsewhere (macOS: 49152) the range starts higher


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
