r"""Observers of a run's history rows: a progress bar (a terminal's or a notebook's), a user
callback.

An observer sees ``start(total, done)`` once, ``row(step, row)`` for every history row and
``close()`` at the end (also after an interrupt); training never depends on it. Both bars
show the stage the run is in (``stage 2: lr 0.0015, lam 0.005``), the relative fit and
:math:`\|\theta\|^2`.

In Jupyter the bar is an HTML ``<progress>`` element updated in place through IPython's
display handles (rich's live display needs ipywidgets there, and its widget state is lost
in a saved notebook; a display handle's last update is what the saved notebook shows).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Observer", "ProgressBar", "NotebookProgress", "CallbackObserver",
           "default_observers", "in_notebook", "stage_text"]


def stage_text(row: dict[str, Any]) -> str:
    """The stage of a history row in words: ``"stage 2: lr 0.0015, lam 0.005"`` (stages
    counted from 1)."""
    return f"stage {int(row['stage']) + 1}: lr {row['lr']:.3g}, lam {row['lam']:.3g}"


def _info(row: dict[str, Any]) -> str:
    return (f"{stage_text(row)} · rel_fit {row['rel_fit']:.2e} · |θ|² "
            f"{row['param_norm2']:.1f}")


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
        self._bar.update(self._id, completed=step, info=_info(row))

    def close(self) -> None:
        self._bar.stop()


class NotebookProgress:
    """A progress bar in a Jupyter notebook: one display updated in place (at most every
    ``every`` seconds, and at the end) with the steps done, the stage, the fit, the norm and
    the time left."""

    def __init__(self, label: str = "train", every: float = 0.25) -> None:
        self.label, self.every = label, every
        self._handle: Any = None
        self._last = 0.0
        self._state: dict[str, Any] = {}

    def start(self, total: int, done: int) -> None:
        import time

        from IPython.display import display

        self._t0, self._done0 = time.perf_counter(), done
        self._state = {"total": total, "step": done, "info": "starting"}
        self._handle = display(_Bar(self.label, **self._state), display_id=True)

    def row(self, step: int, row: dict[str, Any]) -> None:
        import time

        now = time.perf_counter()
        self._state.update(step=step, info=_info(row))
        ran, left = step - self._done0, self._state["total"] - step
        self._state["eta"] = (now - self._t0) / ran * left if ran > 0 else None
        if now - self._last >= self.every:
            self._last = now
            self._show()

    def close(self) -> None:
        self._state["eta"] = None
        self._show()

    def _show(self) -> None:
        if self._handle is not None:
            self._handle.update(_Bar(self.label, **self._state))


class _Bar:
    """What a notebook shows for :class:`NotebookProgress` (HTML, with a plain-text form)."""

    def __init__(self, label: str, total: int, step: int, info: str,
                 eta: float | None = None) -> None:
        self.label, self.total, self.step, self.info, self.eta = label, total, step, info, eta

    def _text(self) -> str:
        eta = f" · {self.eta:.0f} s left" if self.eta is not None else ""
        return f"{self.label} {self.step}/{self.total} · {self.info}{eta}"

    def __repr__(self) -> str:
        return self._text()

    def _repr_html_(self) -> str:
        import html

        return (f'<div class="bnstruct-progress"><progress value="{self.step}" '
                f'max="{max(self.total, 1)}" style="width:16em;vertical-align:middle">'
                f"</progress> <code>{html.escape(self._text())}</code></div>")


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ``ZMQInteractiveShell``)."""
    mod = sys.modules.get("IPython")
    if mod is None:
        return False
    try:
        shell = mod.get_ipython()
    except AttributeError:
        return False
    return type(shell).__name__ == "ZMQInteractiveShell"


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
    """The progress bar when ``progress`` is true (default: when stderr is a terminal or the
    code runs in a Jupyter notebook; in a notebook the bar is :class:`NotebookProgress`),
    then the callback."""
    obs: list[Observer] = []
    notebook = in_notebook()
    if (sys.stderr.isatty() or notebook) if progress is None else progress:
        obs.append(NotebookProgress() if notebook else ProgressBar())
    if callback is not None:
        obs.append(CallbackObserver(callback))
    return obs
