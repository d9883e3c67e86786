"""Progress bars on stderr for the commands that can take more than a second."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def bar(label: str, total: int | None, counted: bool = True) -> Iterator[Any]:
    """A rich progress bar on stderr (hidden when stderr is not a terminal); ``counted``:
    with a count of objects done (a step that cannot count shows only that it runs)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        *([MofNCompleteColumn()] if counted else []),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=total)

        class _Tick:
            def advance(self, n: int) -> None:
                bar.advance(task, n)

            def total(self, n: int) -> None:
                bar.update(task, total=n)

        yield _Tick()
