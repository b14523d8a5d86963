"""Fixtures for upstream client tests: a fault-injecting upstream and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hearth.upstream.client import UpstreamClient
from support.fault_upstream import FaultUpstream


@pytest.fixture
async def upstream() -> AsyncIterator[FaultUpstream]:
    server = FaultUpstream()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream_client = UpstreamClient(timeout=10.0)
    yield upstream_client
    await upstream_client.aclose()
