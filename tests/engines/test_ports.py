"""Engine ports come from below the kernel's ephemeral range, where an outgoing connection
cannot take them between choosing and binding, and are never ports something listens on."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hearth.engines import ports


def test_a_port_is_below_the_ephemeral_range_and_bindable() -> None:
    first = int(ports.EPHEMERAL_RANGE.read_text().split()[0])
    for _ in range(20):
        port = ports.free_port()
        assert ports.LOWEST <= port < first
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free indeed


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        offered = iter([busy, busy, 20123])
        monkeypatch.setattr(ports.random, "randrange", lambda low, high: next(offered))
        assert ports.free_port() == 20123


def test_without_room_below_the_range_the_kernel_chooses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    narrow = tmp_path / "ip_local_port_range"
    narrow.write_text("20500\t60999\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", narrow)
    monkeypatch.setattr(ports.random, "randrange", lambda low, high: pytest.fail("not below"))
    assert ports.free_port() > 0
