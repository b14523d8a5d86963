"""Free loopback ports for servers the tests start: Hearth's own choice for its engines (below
the kernel's ephemeral range, see hearth.engines.ports), so a test server cannot lose its port
to an outgoing connection between choosing it and binding it."""

from __future__ import annotations

from hearth.engines.ports import free_port as _engine_port


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range where there is room."""
    return _engine_port("127.0.0.1")
