"""Executors: train a planned list of :class:`~bnstruct.config.RunConfig` into a store.

Every experiment lists its training runs up front; :func:`execute` trains the ones the store
does not hold yet and returns every run, finished or reused, in the order given:

1. :func:`make_plan` makes the :class:`Plan`: runs the store already has (finished:
   ``completed`` or ``diverged``) are reused; the rest are grouped into batches of networks
   that can train together (:func:`batch_key`, plus the step of their checkpoint, so an
   interrupted group resumes as a group), longest first, on the workers of the executor;
2. each run is claimed (:func:`bnstruct.store.claim`): runs another process trains are
   waited for, not trained twice;
3. the batches train on a :class:`LocalExecutor` (a training thread of this process and
   worker processes forked from a preloaded forkserver) or a :class:`RayExecutor`, every
   one through :func:`train_group`, and the driver writes every result
   (:func:`bnstruct.store.write_result`).

So a run's weights are the same bits whichever executor, worker, batch or row trained it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import RunConfig
from ..errors import ConfigError, ExecutionFailed
from ..store import (
    Run,
    RunResult,
    claim,
    finished,
    open_run,
    release,
    reuse_run,
    wait_for,
    write_result,
)
from ._group import batch_key, train_group
from ._local import run_local, worker_context
from ._plan import (
    MAX_BATCH,
    Executor,
    LocalExecutor,
    Plan,
    RayExecutor,
    available_cores,
    batch_cost,
    busy_cores,
    free_cores,
    make_plan,
    plan_batches,
    simulate_schedule,
    worker_plan,
)
from ._single import run

__all__ = ["execute", "make_plan", "Plan", "LocalExecutor", "RayExecutor", "Executor",
           "train_group", "batch_key", "run", "plan_batches", "worker_plan", "batch_cost",
           "available_cores", "free_cores", "busy_cores", "simulate_schedule",
           "worker_context", "ExecutionFailed", "MAX_BATCH"]

Progress = Callable[[RunConfig], None]


class _Done:
    """The finished runs of one :func:`execute` call, each reported once to ``progress``."""

    def __init__(self, configs: Sequence[RunConfig], progress: Progress | None) -> None:
        self.by_name = {c.default_name(): c for c in configs}
        self.runs: dict[str, Run] = {}
        self.progress = progress

    def add(self, r: Run) -> None:
        self.runs[r.path.name] = r
        if self.progress is not None:
            self.progress(self.by_name[r.path.name])


def execute(work: Plan | Sequence[RunConfig], store: str | Path | None = None, *,
            executor: Executor | None = None, progress: Progress | None = None
            ) -> list[Run]:
    """Train (or reuse) every config of ``work`` (a :class:`Plan`, or configs planned here by
    :func:`make_plan` in ``store`` on ``executor``, default :class:`LocalExecutor`); returns
    the runs in the order of the configs (duplicates are trained once and returned each
    time). ``progress(config)`` is called, in the calling thread, once per distinct config
    when its run is finished (trained or reused).

    A Ctrl-C stops the running batches at a step boundary with checkpoints (status
    ``interrupted``; running this again resumes them), starts no other, and raises
    ``KeyboardInterrupt``; an error stops them the same way before it is raised. (Ctrl-C is
    caught only when this runs in the main thread with Python's default SIGINT handler.)

    Worker processes import the main module: a script that calls this with several batches
    must guard its top level with ``if __name__ == "__main__":`` (or use
    ``LocalExecutor(workers=1)``). Runs whose Ray task kept failing raise
    :class:`~bnstruct.errors.ExecutionFailed` once the others are finished."""
    if isinstance(work, Plan):
        if store is not None or executor is not None:
            raise ConfigError("execute(plan) takes the store and executor of the plan")
        plan = work
    else:
        if store is None:
            raise ConfigError("execute(configs, store) needs a store")
        plan = make_plan(work, store, executor)
    root = plan.store
    done = _Done(plan.configs, progress)
    for c in plan.reused:
        open_run(c, root, c.default_name(), True)  # the stored config is this one
        done.add(reuse_run(root / c.default_name()))
    errors: dict[str, str] = {}
    pending = [c for b in plan.batches for c in b]
    while pending:
        mine = [c for c in pending if claim(root, c.default_name())]
        theirs = [c.default_name() for c in pending if c not in mine]
        try:
            errors |= _train(mine, plan, done)
        finally:
            for c in mine:
                release(root, c.default_name())
        orphans = set(wait_for(root, theirs))  # trained elsewhere; retake abandoned ones
        for n in theirs:
            if n not in orphans:
                done.add(reuse_run(root / n))
        pending = [done.by_name[n] for n in theirs if n in orphans]
    if errors:
        raise ExecutionFailed(errors, done.runs)
    return [done.runs[c.default_name()] for c in plan.configs]


def _train(mine: list[RunConfig], plan: Plan, done: _Done) -> dict[str, str]:
    """Train the claimed configs ``mine`` (the plan's batches when all are ours, else
    re-batched); returns ``{run name: error}`` of runs that failed (Ray only)."""
    root = plan.store
    for c in list(mine):  # finished by another process before we claimed it
        if finished(root / c.default_name()):
            mine.remove(c)
            done.add(reuse_run(root / c.default_name()))
    planned = [c for b in plan.batches for c in b]
    if mine == planned:
        batches = [list(b) for b in plan.batches]
    else:
        batches = plan_batches(mine, root, max_batch=plan.executor.max_batch)
        batches.sort(key=batch_cost, reverse=True)

    def sink(r: RunResult) -> None:
        done.add(write_result(root, r))

    if isinstance(plan.executor, RayExecutor):
        from ._ray import run_ray

        return run_ray(batches, sink, plan.executor)
    run_local(batches, root, plan.workers, plan.threads, sink)
    return {}
