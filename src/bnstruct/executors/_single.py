"""One run into a store (``bnstruct train``, :func:`bnstruct.run`): claimed, trained through
:func:`~bnstruct.executors.train_group` as a batch of one, written by
:func:`bnstruct.store.write_result`, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig, resolve_device
from ..store import (
    Run,
    RunBusyError,
    check_name,
    check_writable,
    checkpoint_step,
    claim,
    claimed_by,
    finished,
    load_run,
    open_run,
    prepare,
    preparing,
    release,
    stored_task,
    wait_for,
    write_result,
)
from ..tasks import Task
from ..training import deferred_sigint
from ..training._progress import default_observers
from ._group import train_group

__all__ = ["run"]


def run(config: RunConfig, store: str | Path = "runs", *, name: str | None = None,
        resume: bool = False, progress: bool | None = None, task: Task | None = None,
        wait: bool = False) -> Run:
    """Train ``config`` into ``store/name`` (default name: :meth:`RunConfig.default_name`).

    An existing run directory is an error unless ``resume=True``: then a finished run is
    loaded as is (no training) and an unfinished one continues from its checkpoint to the same
    weights an uninterrupted run gives. ``task`` overrides ``config.task.build()`` (used for
    data loaded from a file, which is then copied into the run directory).

    The run is claimed first (:func:`bnstruct.store.claim`): while another process trains
    it, this raises :class:`RunBusyError`, or with ``wait=True`` waits for it (and returns it
    once finished). The weights are those of the same config in any batch of any executor."""
    root = Path(store)
    name = config.default_name() if name is None else name
    check_name(root, name)
    check_writable(root)
    while not claim(root, name):
        holder = claimed_by(root, name) or "another process"
        if not wait:
            raise RunBusyError(f"run {root / name} is being trained by another process "
                               f"({holder}): wait for it (wait=True, CLI --wait)")
        wait_for(root, [name])
        if finished(root / name):
            open_run(config, root, name, True)  # same configuration?
            return load_run(root / name)
    try:
        return _claimed(config, root, name, resume, progress, task)
    finally:
        release(root, name)


def _claimed(config: RunConfig, root: Path, name: str, resume: bool, progress: bool | None,
             task: Task | None) -> Run:
    path = open_run(config, root, name, resume)
    if resume and finished(path):
        return load_run(path)
    task = task if task is not None else stored_task(config, path)
    config.model.check(task.d_in, task.d_out)  # fails before anything is written
    resolve_device(config.device)
    with preparing([path]):
        prepare(config, root, path, task)
        return _train(config, root, path, task, progress)


def _train(config: RunConfig, root: Path, path: Path, task: Task, progress: bool | None
           ) -> Run:
    obs = default_observers(progress, None)
    for o in obs:
        o.start(config.steps, checkpoint_step(path))

    def on_row(i: int, row: dict[str, Any]) -> None:
        for o in obs:
            o.row(row["step"], row)

    try:
        with deferred_sigint() as stop:
            (res,) = train_group([config], dirs=[path], task=task, stop=stop, on_row=on_row)
            return write_result(root, res)
    finally:
        for o in obs:
            o.close()

