"""One progress bar for long work (extraction, studies), drawn on stderr."""

from __future__ import annotations

from typing import Any


def progress_bar(enabled: bool, *, rate: bool = False) -> Any:
    """A rich progress bar: description, bar, done/total, elapsed and remaining time.

    Args:
        enabled: draw it (``False``: a silent stand-in with the same API).
        rate: add a column showing the task's ``rate`` field (e.g. ``"12.3 items/s"``).

    Returns:
        A ``rich.progress.Progress``, to be used as a context manager.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if rate:
        columns.append(TextColumn("{task.fields[rate]}"))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    # stderr, so a pipeline's stdout (summary line, prediction tables) stays clean
    return Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=False)
