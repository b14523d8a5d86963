"""What the model commands share on the terminal: store errors as clean CLI errors, sizes for
people, and download progress."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from hearth.errors import HearthError

T = TypeVar("T")


def run_store_action(action: Callable[[], T]) -> T:
    """`action()`, with Hearth's errors said as a CLI error (exit 1, no traceback)."""
    try:
        return action()
    except HearthError as exc:
        raise click.ClickException(str(exc)) from None


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


class DownloadProgress:
    """A rich progress bar per file on a terminal; one line per file otherwise (logs, CI)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}
        self.reported: set[str] = set()

    def __enter__(self) -> DownloadProgress:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def __call__(self, filename: str, done: int, total: int | None) -> None:
        if not self.live:
            if filename not in self.reported:
                self.reported.add(filename)
                resumed = f", resuming at {human_size(done)}" if done and done != total else ""
                self.console.print(f"downloading {filename} ({human_size(total)}{resumed})")
            return
        task = self.tasks.get(filename)
        if task is None:
            task = self.tasks[filename] = self.progress.add_task(filename, total=total)
        self.progress.update(task, completed=done, total=total)
