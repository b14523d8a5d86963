"""Where CLI commands reach the running server: wildcard binds mean loopback."""

from __future__ import annotations

import pytest

from hearth.cli.running import server_url
from hearth.config import Settings


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9000"),
        ("0.0.0.0", "http://127.0.0.1:9000"),
        ("::", "http://[::1]:9000"),
        ("::1", "http://[::1]:9000"),
        ("hearth.internal", "http://hearth.internal:9000"),
    ],
)
def test_server_url(host: str, url: str) -> None:
    assert server_url(Settings(host=host, port=9000)) == url
