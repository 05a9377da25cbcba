"""The stage runner (a generator of history rows) and :func:`train`, which wires it to a
:class:`~bnstruct.training.TrainState` (resume, checkpoints) and to observers (progress).

Divergence without a host sync per step: every step writes its loss into a buffer on the
device; the buffer is read at each check (every logging step, checkpoint step, stage end and
interrupt), so ``diverged_at`` is exact for the loss: it is the number of optimizer steps done
when the training loss was first non-finite. Parameters that turn non-finite while every
training loss stays finite (not seen in practice) are caught by the full-batch evaluation at
the next logging step, and ``diverged_at`` is then that logging step (late by at most
``log_every`` steps). A diverged run stops at the check that sees it; its last history row is
logged at that step (``step >= diverged_at``) with the non-finite metrics.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError
from ..tasks import Task
from ._progress import Observer, default_observers
from ._stages import Stage, default_recipe, make_optimizer, minibatch
from ._state import TrainState
from ._step import evaluate, first_nonfinite, step

__all__ = ["StageRunner", "train", "TrainResult", "HISTORY_COLUMNS", "deferred_sigint",
           "Presses", "active_presses"]

HISTORY_COLUMNS = ["step", "stage", "lr", "lam", "objective", "fit", "penalty", "param_norm2",
                   "rel_fit", "test_error", "rel_test_error", "seconds"]


@dataclass
class TrainResult:
    """Outcome of :func:`train`: ``status`` is ``completed``, ``diverged`` or ``interrupted``;
    ``history`` one row per logged step (columns :data:`HISTORY_COLUMNS`); ``diverged_at`` the
    number of steps done when the loss was first non-finite (see the module docstring);
    ``final`` the last row's metrics (non-finite for a diverged run)."""

    status: str
    steps: int
    history: pd.DataFrame
    seconds: float
    diverged_at: int | None = None
    final: dict[str, float] = field(default_factory=dict)


class _Interrupt(KeyboardInterrupt):
    """Raised by the runner at a step boundary after a deferred Ctrl-C."""


class Presses:
    """The Ctrl-C counter of a :func:`deferred_sigint` block; calling it gives the count.
    Runners stop at their next step boundary (with checkpoints) once it is non-zero, and at
    once, without a new checkpoint, once it is above 1."""

    def __init__(self) -> None:
        self._count = 0

    def __call__(self) -> int:
        return self._count

    def press(self) -> None:
        """Count one Ctrl-C."""
        self._count += 1

    def stop(self) -> None:
        """Ask the runners that share this counter to stop as a first Ctrl-C does (a no-op
        once one was pressed)."""
        self._count = max(self._count, 1)


_ACTIVE = threading.local()  # .presses: the counter of this thread's outermost block


def active_presses() -> Presses | None:
    """The counter of this thread's active :func:`deferred_sigint` block, if any."""
    return getattr(_ACTIVE, "presses", None)


@contextmanager
def deferred_sigint(share: Presses | None = None) -> Iterator[Presses]:
    """Within the block a first Ctrl-C (SIGINT) only counts, and the runners, which read the
    count after each step, stop at a step boundary with a consistent checkpoint; a second
    Ctrl-C raises ``KeyboardInterrupt`` at once. Yields the counter (:class:`Presses`).

    Nested blocks of one thread share the outermost one's counter. ``share``: use this
    counter (another thread's) instead of a new one; that is how a helper thread that trains
    for the main thread's block stops on its Ctrl-C, or on :meth:`Presses.stop`. Signals are
    only caught in the main thread and where SIGINT has Python's default handler; elsewhere
    the count only changes by :meth:`Presses.stop`."""
    outer = getattr(_ACTIVE, "presses", None)
    if outer is not None:
        yield outer
        return
    presses = share if share is not None else Presses()
    _ACTIVE.presses = presses
    try:
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            yield presses
            return

        def handler(signum: int, frame: Any) -> None:
            presses.press()
            if presses() > 1:
                raise KeyboardInterrupt

        old = signal.signal(signal.SIGINT, handler)
        try:
            yield presses
        finally:
            signal.signal(signal.SIGINT, old)
    finally:
        _ACTIVE.presses = None


class StageRunner:
    """Runs ``stages`` on ``model`` (in place) and yields the history rows.

    The task is moved to the model's device and dtype. Each stage gets a fresh optimizer
    (:func:`~bnstruct.training.make_optimizer`); minibatches (``Stage.batch_size``) come from
    :func:`~bnstruct.training.minibatch`, seeded by ``seed``. ``rows`` advances a
    :class:`TrainState` in place, so whoever consumes the rows can checkpoint it at any time
    (:meth:`snapshot`)."""

    def __init__(self, model: nn.Module, task: Task, stages: Sequence[Stage], *, seed: int = 0,
                 log_every: int = 100) -> None:
        p0 = next(model.parameters())
        self.model, self.stages, self.seed, self.log_every = model, tuple(stages), seed, log_every
        self.task = task.to(p0.device, p0.dtype)
        self.params = list(model.parameters())
        self.ends = [sum(s.steps for s in self.stages[:i + 1]) for i in range(len(self.stages))]
        self.opt: torch.optim.Optimizer | None = None
        self._t0 = time.perf_counter()
        self._base = 0.0

    @property
    def total(self) -> int:
        return self.ends[-1]

    def elapsed(self) -> float:
        return self._base + time.perf_counter() - self._t0

    def snapshot(self, state: TrainState) -> TrainState:
        """``state`` with the current weights, optimizer state and time (no optimizer state at
        a stage boundary: the next stage starts a fresh optimizer)."""
        state.seconds = self.elapsed()
        state.capture(self.model, None if state.step in self.ends else self.opt)
        return state

    def _row(self, state: TrainState, si: int) -> dict[str, Any]:
        st = self.stages[si]
        row = {"step": state.step, "stage": si, "lr": st.lr, "lam": st.lam,
               **evaluate(self.model, self.task, st.lam), "seconds": self.elapsed()}
        state.history.append(row)
        return row

    def rows(self, state: TrainState, *, checkpoint_every: int | None = None,
             save: Callable[[TrainState], None] | None = None,
             interrupted: Callable[[], int] = lambda: 0) -> Iterator[dict[str, Any]]:
        """Train from ``state`` to the end, yielding each history row (step 0, every
        ``log_every`` steps, every stage end). ``save(state)`` is called every
        ``checkpoint_every`` steps and at stage ends (after :meth:`snapshot`). Sets
        ``state.status`` (``completed`` or ``diverged``) and ``state.diverged_at``; when
        ``interrupted()`` turns non-zero, raises ``KeyboardInterrupt`` at the next step
        boundary."""
        self._t0, self._base = time.perf_counter(), state.seconds
        X, Y, N = self.task.X, self.task.Y, self.task.n_train
        losses = torch.empty(self.log_every, dtype=X.dtype, device=X.device)
        pending_opt = bool(any(k.startswith("opt.") for k in state.tensors))
        offset = 0
        for si, stage in enumerate(self.stages):
            end = self.ends[si]
            if state.step >= end:
                offset = end
                continue
            self.opt = opt = make_optimizer(stage, self.params)
            if pending_opt:
                state.restore_optimizer(opt)
                pending_opt = False
            if not state.history:
                yield self._row(state, si)
            bs = stage.batch_size
            full = bs is None or bs >= N
            checked = state.step
            while state.step < end:
                if full:
                    xb, yb = X, Y
                else:
                    assert bs is not None
                    idx = minibatch(self.seed, si, state.step - offset, bs, N).to(X.device)
                    xb, yb = X[idx], Y[idx]
                step(self.model, opt, xb, yb, losses, state.step - checked)
                state.step += 1
                s = state.step
                log = s % self.log_every == 0 or s == end
                ck = save is not None and checkpoint_every is not None and s % checkpoint_every == 0
                stop = interrupted() > 0
                if not (log or ck or stop):
                    continue
                bad = first_nonfinite(losses[:s - checked])
                if bad is not None:
                    state.status, state.diverged_at = "diverged", checked + bad
                    yield self._row(state, si)
                    return
                checked = s
                if stop:
                    raise _Interrupt
                if log:
                    row = self._row(state, si)
                    if not all(math.isfinite(row[c]) for c in ("objective", "param_norm2")):
                        state.status, state.diverged_at = "diverged", s
                        yield row
                        return
                    yield row
                if ck:
                    assert save is not None
                    save(self.snapshot(state))
            offset = end
            self.opt = None
            if save is not None and checkpoint_every:
                save(self.snapshot(state))  # a checkpoint at every stage boundary
        state.status = "completed"


def train(model: nn.Module, task: Task, stages: Sequence[Stage] | None = None, *, seed: int = 0,
          log_every: int = 100, checkpoint: str | Path | None = None,
          checkpoint_every: int | None = None, resume: bool = False,
          progress: bool | None = None,
          callback: Callable[[int, dict[str, Any]], None] | None = None,
          observers: Sequence[Observer] = ()) -> TrainResult:
    r"""Train ``model`` in place on ``task`` through ``stages`` (default :func:`default_recipe`).

    The data is moved to the model's device and dtype. Each stage gets a fresh optimizer.
    Minibatches (``Stage.batch_size``) are drawn without replacement per epoch, seeded by
    ``seed``: same seed, same machine, bit-identical weights.

    Args:
        log_every: history row every ``log_every`` steps (plus the first step and each stage's
            last); also how often divergence is checked.
        checkpoint: path prefix of the checkpoint (``<prefix>.safetensors``, the resume state
            in its header, plus a readable ``<prefix>.json``), written every
            ``checkpoint_every`` steps, at stage ends and on interrupt; with ``resume=True`` an
            existing checkpoint is continued and gives the same weights as an uninterrupted run.
        progress: a rich progress bar on stderr (default: when stderr is a terminal).
        callback: called as ``callback(step, row)`` after each history row.
        observers: more :class:`~bnstruct.training.Observer`\ s of the rows.

    A non-finite loss or parameter stops the run: ``status="diverged"`` and ``diverged_at``
    (see :mod:`bnstruct.training._runner` for its precision; no exception). Ctrl-C
    (``KeyboardInterrupt``) stops at a step boundary, writes a checkpoint (when ``checkpoint``
    is set) and returns ``status="interrupted"``; a second Ctrl-C stops at once without a new
    checkpoint (resume then starts from the last periodic one).
    """
    stages = tuple(default_recipe() if stages is None else stages)
    if not stages or not all(isinstance(s, Stage) for s in stages):
        raise ConfigError("stages must be a non-empty sequence of bnstruct.Stage")
    if not isinstance(log_every, int) or log_every < 1:
        raise ConfigError(f"log_every must be an integer >= 1, got {log_every!r}")
    if checkpoint_every is not None and checkpoint is None:
        raise ConfigError("checkpoint_every needs a checkpoint path")
    runner = StageRunner(model, task, stages, seed=seed, log_every=log_every)
    state = None
    if resume and checkpoint is not None:
        state = TrainState.load(checkpoint, stages, device=next(model.parameters()).device)
    if state is not None:
        state.restore_model(model)
    else:
        state = TrainState(stages)

    def save(st: TrainState) -> None:
        assert checkpoint is not None
        st.save(checkpoint)

    obs = [*default_observers(progress, callback), *observers]
    for o in obs:
        o.start(runner.total, state.step)
    try:
        with deferred_sigint() as presses:
            try:
                for row in runner.rows(state, checkpoint_every=checkpoint_every,
                                       save=save if checkpoint is not None else None,
                                       interrupted=presses):
                    for o in obs:
                        o.row(row["step"], row)
            except KeyboardInterrupt:
                state.status = "interrupted"
                # after a second Ctrl-C the optimizer may be half-way through a step: keep the
                # last periodic checkpoint then
                if checkpoint is not None and presses() <= 1:
                    save(runner.snapshot(state))
    finally:
        for o in obs:
            o.close()
    hist = pd.DataFrame(state.history, columns=HISTORY_COLUMNS)
    final = ({k: float(v) for k, v in state.history[-1].items() if k not in ("step", "stage")}
             if state.history else {})
    return TrainResult(state.status, state.step, hist, runner.elapsed(), state.diverged_at,
                       final)
