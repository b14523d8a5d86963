"""A durable journal of the usage rows not yet in the database.

Each row is appended (one JSON line, a plain `write(2)`) before its response completes, so a
Hearth killed with SIGKILL loses nothing it already answered: the kernel holds the bytes. (No
fsync: a power cut may still lose the last rows; that costs a disk flush per request.) When a
batch is taken for the database the current segment is sealed and a new one begun; sealed
segments are deleted once their rows are in. At start, what is left is replayed."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CURRENT = "current.jsonl"


class UsageJournal:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._sealed = max((_number(p) for p in folder.glob("sealed-*.jsonl")), default=0)
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.folder / CURRENT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def append(self, row: dict[str, Any]) -> None:
        os.write(self._fd, json.dumps(row, separators=(",", ":")).encode() + b"\n")

    def seal(self) -> int:
        """Start a new segment; returns the number of the one just sealed. Rows appended so far
        are exactly the ones buffered for the database (plus those of older sealed segments)."""
        os.close(self._fd)
        self._sealed += 1
        os.replace(self.folder / CURRENT, self.folder / f"sealed-{self._sealed:09d}.jsonl")
        self._fd = self._open()
        return self._sealed

    def written(self, upto: int) -> None:
        """Rows of the segments sealed up to `upto` are in the database: forget them."""
        for path in self.folder.glob("sealed-*.jsonl"):
            if _number(path) <= upto:
                path.unlink(missing_ok=True)

    def leftovers(self) -> tuple[list[dict[str, Any]], int]:
        """The rows a previous run left (its segments, sealed first), and the number of the
        segment that now holds them all (sealed here; pass it to `written`)."""
        upto = self.seal()
        rows: list[dict[str, Any]] = []
        for path in sorted(self.folder.glob("sealed-*.jsonl"), key=_number):
            for line in path.read_bytes().splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:  # a line cut short when the process died mid-write
                    log.warning("usage journal %s: skipping a damaged line", path.name)
        return rows, upto

    def close(self) -> None:
        os.close(self._fd)


def _number(path: Path) -> int:
    try:
        return int(path.stem.removeprefix("sealed-"))
    except ValueError:
        return 0
