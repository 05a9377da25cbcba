r"""The public ways to train: :func:`train` (one model) and :func:`train_batched` (many
bnstruct networks of one shape), both thin layers over the one loop
(:func:`~bnstruct.training.run_stages`): they load or start each member's
:class:`~bnstruct.training.TrainState`, build the :class:`~bnstruct.training.Batch`, catch
Ctrl-C (:func:`~bnstruct.training.deferred_sigint`) and return :class:`TrainResult`\ s.

A bnstruct network trained by :func:`train` is a batch of one, so it gets the same bits as
in any batch (see :mod:`bnstruct.training._batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from ..errors import ConfigError
from ..tasks import Task
from ._batch import make_batch, same_structure
from ._loop import run_stages
from ._progress import Observer, default_observers
from ._stages import Stage, default_recipe
from ._state import TrainState, checkpoint_step
from ._stop import StopToken, deferred_sigint

__all__ = ["train", "train_batched", "train_members", "TrainResult", "HISTORY_COLUMNS"]

HISTORY_COLUMNS = ["step", "stage", "lr", "lam", "objective", "fit", "penalty", "param_norm2",
                   "rel_fit", "test_error", "rel_test_error", "seconds"]


@dataclass
class TrainResult:
    """Outcome of :func:`train`: ``status`` is ``completed``, ``diverged`` or ``interrupted``;
    ``history`` one row per logged step (columns :data:`HISTORY_COLUMNS`); ``diverged_at`` the
    number of steps done when the loss was first non-finite (see :mod:`._loop`); ``final``
    the last row's metrics (non-finite for a diverged run)."""

    status: str
    steps: int
    history: pd.DataFrame
    seconds: float
    diverged_at: int | None = None
    final: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, state: TrainState) -> TrainResult:
        extra = [k for k in (state.history[0] if state.history else {})
                 if k not in HISTORY_COLUMNS]  # a family's own columns (e.g. layer_steps)
        hist = pd.DataFrame(state.history, columns=HISTORY_COLUMNS + extra)
        last = state.history[-1] if state.history else {}
        final = {k: float(v) for k, v in last.items() if k not in ("step", "stage")
                 and isinstance(v, int | float)}
        return cls(state.status, state.step, hist, state.seconds, state.diverged_at, final)


def _check_args(stages: Sequence[Sequence[Stage]], log_every: int,
                checkpoint_every: int | None, checkpointed: bool) -> None:
    if not stages or not all(s and all(isinstance(x, Stage) for x in s) for s in stages):
        raise ConfigError("stages must be a non-empty sequence of bnstruct.Stage")
    if not all(same_structure(stages[0], s) for s in stages):
        raise ConfigError("networks trained in one batch need the same stage structure "
                          "(optimizer, steps and batch size of each stage)")
    if not isinstance(log_every, int) or isinstance(log_every, bool) or log_every < 1:
        raise ConfigError(f"log_every must be an integer >= 1, got {log_every!r}")
    if checkpoint_every is not None and not checkpointed:
        raise ConfigError("checkpoint_every needs a checkpoint path")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ConfigError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")


def _states(models: Sequence[nn.Module], stages: Sequence[tuple[Stage, ...]],
            checkpoints: Sequence[str | Path] | None, resume: bool) -> list[TrainState]:
    """Each member's state: its checkpoint (weights restored into the model) when resuming,
    else a fresh one; the checkpoints of a batch must be at one step."""
    states = [TrainState(s) for s in stages]
    if not (resume and checkpoints is not None):
        return states
    dev = next(models[0].parameters()).device
    loaded = [TrainState.load(c, s, device=dev) for c, s in zip(checkpoints, stages,
                                                                 strict=True)]
    if any(s is not None for s in loaded):
        steps = {s.step if s is not None else 0 for s in loaded}
        if len(steps) != 1:
            raise ConfigError(f"the checkpoints of a batch are at different steps {steps}: "
                              "resume them in separate batches")
        for b, s in enumerate(loaded):
            if s is not None:
                s.restore_model(models[b])
                states[b] = s
    return states


def train_members(models: Sequence[nn.Module], task: Task,
                  stages: Sequence[Sequence[Stage]], seeds: Sequence[int], *,
                  stop: StopToken, log_every: int = 100,
                  checkpoints: Sequence[str | Path] | None = None,
                  checkpoint_every: int | None = None, resume: bool = False,
                  on_row: Callable[[int, dict[str, Any]], None] | None = None
                  ) -> list[TrainResult]:
    """Train ``models`` in place as one batch (:func:`~bnstruct.training.make_batch`) through
    the one loop, stopping at a step boundary once ``stop`` is set; see
    :func:`train_batched` for the arguments. Every executor trains through this."""
    if not models:
        return []
    lists = [tuple(s) for s in stages]
    if len(lists) != len(models) or len(seeds) != len(models):
        raise ConfigError("training a batch needs one stage list and one seed per model")
    if checkpoints is not None and len(checkpoints) != len(models):
        raise ConfigError("training a batch needs one checkpoint prefix per model")
    _check_args(lists, log_every, checkpoint_every, checkpoints is not None)
    states = _states(models, lists, checkpoints, resume)
    p0 = next(models[0].parameters())
    for m in models:
        d_in = getattr(m, "d_in", None)
        if isinstance(d_in, int) and d_in != task.d_in:
            raise ConfigError(f"the model takes {d_in} inputs but the task {task.name!r} has "
                              f"{task.d_in}: build the model with d_in={task.d_in}")
        d_out = getattr(m, "d_out", None)
        if isinstance(d_out, int) and d_out != task.d_out:
            raise ConfigError(f"the model has {d_out} outputs but the task {task.name!r} has "
                              f"{task.d_out}: build the model with d_out={task.d_out}")
    batch = make_batch(models)

    def save(b: int, st: TrainState) -> None:
        assert checkpoints is not None
        st.save(checkpoints[b])

    run_stages(batch, task.to(p0.device, p0.dtype), lists, list(seeds), states, stop=stop,
               log_every=log_every, checkpoint_every=checkpoint_every,
               save=save if checkpoints is not None else None, on_row=on_row)
    return [TrainResult.of(s) for s in states]


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
    (see :mod:`bnstruct.training._loop` for its precision; no exception). Ctrl-C
    (``KeyboardInterrupt``) stops at a step boundary, writes a checkpoint (when ``checkpoint``
    is set) and returns ``status="interrupted"``; a second Ctrl-C stops at once without a new
    checkpoint (resume then starts from the last periodic one).
    """
    stages = tuple(default_recipe() if stages is None else stages)
    _check_args([stages], log_every, checkpoint_every, checkpoint is not None)  # before the bar
    obs = [*default_observers(progress, callback), *observers]
    done = checkpoint_step(checkpoint) if resume and checkpoint is not None else 0
    for o in obs:
        o.start(sum(s.steps for s in stages), done)
    def on_row(b: int, row: dict[str, Any]) -> None:
        for o in obs:
            o.row(row["step"], row)

    try:
        with deferred_sigint() as stop:
            (res,) = train_members([model], task, [stages], [seed], stop=stop,
                                   log_every=log_every,
                                   checkpoints=None if checkpoint is None else [checkpoint],
                                   checkpoint_every=checkpoint_every, resume=resume,
                                   on_row=on_row)
    finally:
        for o in obs:
            o.close()
    return res


def train_batched(models: Sequence[nn.Module], task: Task,
                  stages: Sequence[Sequence[Stage]], seeds: Sequence[int], *,
                  log_every: int = 100,
                  checkpoints: Sequence[str | Path] | None = None,
                  checkpoint_every: int | None = None, resume: bool = False,
                  on_row: Callable[[int, dict[str, Any]], None] | None = None
                  ) -> list[TrainResult]:
    """Train bnstruct networks ``models`` (same sizes and activation) together on ``task``,
    network ``b`` through ``stages[b]`` (one stage structure: optimizer, steps and batch
    size per stage; ``lr`` and ``lam`` may differ) with minibatch seed ``seeds[b]``. The
    models are updated in place; one :class:`TrainResult` per network, bit for bit what
    :func:`train` gives each alone.

    ``checkpoints[b]`` is network ``b``'s checkpoint prefix (the single-run format), written
    every ``checkpoint_every`` steps, at stage ends and on interrupt; with ``resume=True``
    existing checkpoints are continued (all at the same step, or none present).
    ``on_row(b, row)`` sees every history row of network ``b``. Ctrl-C as in :func:`train`.
    """
    with deferred_sigint() as stop:
        return train_members(models, task, stages, seeds, stop=stop, log_every=log_every,
                             checkpoints=checkpoints, checkpoint_every=checkpoint_every,
                             resume=resume, on_row=on_row)
