"""Free loopback ports for servers the tests start.

Ports are taken below the kernel's ephemeral range: a port from the range (what binding to port 0
gives) can be taken between choosing it and the server binding it by any outgoing connection,
the server's own to PostgreSQL or Redis included ("address already in use" at start, seen in CI).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 20000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range where there is room."""
    first_ephemeral = _first_ephemeral()
    for _ in range(100):
        if first_ephemeral - LOWEST < 1000:
            break
        port = random.randrange(LOWEST, first_ephemeral)
        if _bindable(port):
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _first_ephemeral() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
