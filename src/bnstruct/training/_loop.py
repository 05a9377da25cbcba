"""The one stage loop: every run, alone or in a batch, in this process, a worker or on Ray,
trains through :func:`run_stages`.

Divergence without a host sync per step: every step writes each member's loss into a buffer
on the device; the buffer is read at each check (every logging step, checkpoint step, stage
end and stop request), so ``diverged_at`` is exact for the loss: the number of optimizer
steps done when the member's training loss was first non-finite. Parameters that turn
non-finite while every loss stays finite (not seen in practice) are caught by the full-batch
evaluation at the next logging step (``diverged_at`` is then that step). A diverged member
gets its last history row at the check that sees it (with the non-finite metrics) and leaves
the batch; the others go on.

Stopping: the loop reads its :class:`~bnstruct.training.StopToken` after every step and,
once set, ends at that step boundary (the caller checkpoints and marks the runs
``interrupted``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..tasks import Task
from ._batch import Batch
from ._stages import Stage, minibatch
from ._state import TrainState
from ._stop import StopToken, hold_sigint

__all__ = ["run_stages", "Interrupted"]

Save = Callable[[int, TrainState], None]
OnRow = Callable[[int, dict[str, Any]], None]


class Interrupted(KeyboardInterrupt):
    """Raised by the loop at a step boundary once its stop token is set."""


def _first_nonfinite(losses: torch.Tensor) -> list[int | None]:
    """Per column of ``losses [k, B]``: the first row index that is non-finite, or None
    (one host sync)."""
    bad = ~torch.isfinite(losses)
    anyb, first = bad.any(0).tolist(), bad.to(torch.int8).argmax(0).tolist()
    return [int(f) if a else None for a, f in zip(anyb, first, strict=True)]


class _Loop:
    """State of one :func:`run_stages` call: the batch's rows are ``alive`` members."""

    def __init__(self, batch: Batch, task: Task, stages: Sequence[Sequence[Stage]],
                 seeds: Sequence[int], states: list[TrainState], log_every: int,
                 checkpoint_every: int | None, save: Save | None, stop: StopToken,
                 on_row: OnRow | None) -> None:
        self.batch, self.task, self.stages, self.seeds = batch, task, stages, seeds
        self.states, self.log_every, self.stop, self.on_row = states, log_every, stop, on_row
        self.every = checkpoint_every if save is not None else None
        self.save = save
        self.alive = list(range(len(states)))
        self.step = states[0].step
        s0 = stages[0]
        self.ends = [sum(s.steps for s in s0[:i + 1]) for i in range(len(s0))]
        self.t0, self.base = time.perf_counter(), [s.seconds for s in states]
        self.resumed: list[dict[str, torch.Tensor]] | None = (
            [s.tensors for s in states] if any(k.startswith("opt.") for s in states
                                               for k in s.tensors) else None)
        for s in states:
            s.tensors = {}

    def seconds(self, b: int) -> float:
        return self.base[b] + time.perf_counter() - self.t0

    def run(self) -> None:
        for si in range(len(self.ends)):
            if self.step < self.ends[si] and self.alive:
                self._stage(si)
                if self.alive and self.every:
                    self.checkpoint(optimizer=False)  # at every stage boundary
        for b in self.alive:
            self.states[b].status = "completed"

    def _stage(self, si: int) -> None:
        end, offset = self.ends[si], (self.ends[si - 1] if si else 0)
        stage = self.stages[0][si]
        self.batch.start([self.stages[b][si] for b in self.alive], self.resumed)
        self.resumed = None
        if not self.states[self.alive[0]].history:
            self._log(si, range(len(self.alive)))
        X, Y, N, bs = self.task.X, self.task.Y, self.task.n_train, stage.batch_size
        full = bs is None or bs >= N
        losses = torch.empty(self.log_every, len(self.alive), dtype=X.dtype, device=X.device)
        checked = self.step
        while self.step < end and self.alive:
            idx = None if full else [minibatch(self.seeds[b], si, self.step - offset, bs or N,
                                               N) for b in self.alive]
            xb, yb = self.batch.gather(X, Y, idx)
            with hold_sigint():  # a second Ctrl-C ends the loop after the step, never in it
                self.batch.step(xb, yb, losses[self.step - checked, :len(self.alive)])
                self.step += 1
                for b in self.alive:
                    self.states[b].step = self.step
                hook = getattr(self.batch, "after_step", None)
                if hook is not None:  # e.g. the leaky ResNets' adaptive layer steps
                    hook(self.step, self.task)
            s = self.step
            log = s % self.log_every == 0 or s == end
            ck = self.every is not None and s % self.every == 0
            stop = self.stop.is_set()
            if log or ck or stop:
                self._check(si, losses[:s - checked, :len(self.alive)], checked, log)
                checked = s
                if stop:
                    raise Interrupted
                if ck and self.alive:
                    self.checkpoint(optimizer=True)

    def _check(self, si: int, losses: torch.Tensor, checked: int, log: bool) -> None:
        """Divergence since step ``checked`` and, when ``log``, every member's history row;
        diverged members are logged and dropped."""
        first = _first_nonfinite(losses)
        bad = [r for r, f in enumerate(first) if f is not None]
        for r in bad:
            st = self.states[self.alive[r]]
            st.status, st.diverged_at = "diverged", checked + int(first[r] or 0)
        if bad or log:
            rows = self._log(si, range(len(self.alive)) if log else bad)
            for r, row in enumerate(rows):
                if r not in bad and not all(math.isfinite(row[c])
                                            for c in ("objective", "param_norm2")):
                    st = self.states[self.alive[r]]
                    st.status, st.diverged_at = "diverged", self.step
                    bad.append(r)
        if bad:
            for r in bad:
                self.states[self.alive[r]].seconds = self.seconds(self.alive[r])
            self.batch.drop(sorted(bad))
            self.alive = [b for r, b in enumerate(self.alive) if r not in set(bad)]

    def _log(self, si: int, which: Sequence[int]) -> list[dict[str, Any]]:
        """History rows of the rows ``which`` (all rows are evaluated: one batched pass);
        returns the rows of all."""
        lams = [self.stages[b][si].lam for b in self.alive]
        out = []
        for r, (b, m) in enumerate(zip(self.alive, self.batch.evaluate(self.task, lams),
                                       strict=True)):
            st = self.stages[b][si]
            row = {"step": self.step, "stage": si, "lr": st.lr, "lam": st.lam, **m,
                   "seconds": self.seconds(b)}
            if r in which:
                self.states[b].history.append(row)
                if self.on_row is not None:
                    self.on_row(b, row)
            out.append(row)
        return out

    def checkpoint(self, optimizer: bool) -> None:
        """Save every alive member's state (optimizer state only within a stage)."""
        if self.save is None:
            return
        optimizer = optimizer and self.step not in self.ends
        for r, b in enumerate(self.alive):
            st = self.states[b]
            st.seconds, st.tensors = self.seconds(b), self.batch.snapshot(r, optimizer)
            self.save(b, st)
            st.tensors = {}


def run_stages(batch: Batch, task: Task, stages: Sequence[Sequence[Stage]],
               seeds: Sequence[int], states: list[TrainState], *, stop: StopToken,
               log_every: int = 100, checkpoint_every: int | None = None,
               save: Save | None = None, on_row: OnRow | None = None) -> None:
    """Train the batch's members (row ``b`` is member ``b``) from ``states`` (all at one step,
    weights already in the batch; optimizer tensors of a checkpoint in ``states[b].tensors``)
    through ``stages[b]`` (one stage structure), with minibatch seed ``seeds[b]``, on
    ``task`` (on the batch's device and dtype).

    Each member's :class:`TrainState` advances in place: ``step``, ``history`` (a row at
    step 0, every ``log_every`` steps and each stage end, also passed to ``on_row(b, row)``),
    ``status`` and ``diverged_at``. ``save(b, state)`` gets each member's checkpoint every
    ``checkpoint_every`` steps, at stage ends and, once ``stop`` is set, at that step
    boundary (then the members' status is ``interrupted``); a ``KeyboardInterrupt`` from a
    second Ctrl-C ends the loop at once, without a new checkpoint. The batch's weights are
    written back to its models in every case."""
    loop = _Loop(batch, task, stages, seeds, states, log_every, checkpoint_every, save, stop,
                 on_row)
    try:
        loop.run()
    except KeyboardInterrupt:
        for b in loop.alive:
            states[b].status = "interrupted"
        if stop.presses <= 1:
            loop.checkpoint(optimizer=True)
    finally:
        for b in loop.alive:
            states[b].seconds = loop.seconds(b)
        batch.write_back()
