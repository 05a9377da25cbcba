"""Observers of a run's history rows: a progress bar, a user callback.

An observer sees ``start(total, done)`` once, ``row(step, row)`` for every history row and
``close()`` at the end (also after an interrupt); training never depends on it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Observer", "ProgressBar", "CallbackObserver", "default_observers"]


class Observer(Protocol):
    def start(self, total: int, done: int) -> None: ...

    def row(self, step: int, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class ProgressBar:
    """A rich progress bar on stderr (steps done of ``total``, fit and norm, ETA)."""

    def __init__(self, label: str = "train") -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                             console=Console(stderr=True), transient=True)
        self._id: Any = None

    def start(self, total: int, done: int) -> None:
        self._bar.start()
        self._id = self._bar.add_task("train", total=total, completed=done, info="")

    def row(self, step: int, row: dict[str, Any]) -> None:
        self._bar.update(self._id, completed=step,
                         info=f"rel_fit {row['rel_fit']:.2e}  |θ|² {row['param_norm2']:.1f}")

    def close(self) -> None:
        self._bar.stop()


class CallbackObserver:
    """Calls ``fn(step, row)`` for every history row."""

    def __init__(self, fn: Callable[[int, dict[str, Any]], None]) -> None:
        self.fn = fn

    def start(self, total: int, done: int) -> None:
        pass

    def row(self, step: int, row: dict[str, Any]) -> None:
        self.fn(step, row)

    def close(self) -> None:
        pass


def default_observers(progress: bool | None,
                      callback: Callable[[int, dict[str, Any]], None] | None
                      ) -> list[Observer]:
    """The progress bar when ``progress`` is true (default: when stderr is a terminal), then
    the callback."""
    obs: list[Observer] = []
    if sys.stderr.isatty() if progress is None else progress:
        obs.append(ProgressBar())
    if callback is not None:
        obs.append(CallbackObserver(callback))
    return obs
