"""The Ray executor: the batches of a sweep as Ray tasks, on a local instance or a cluster.

Each batch (a group of configs that train together, :func:`~bnstruct.executors.plan_batches`)
becomes one Ray task (``num_cpus=cpus_per_task``, ``num_gpus=gpus_per_task``) that trains it
in memory (:func:`bnstruct.store.train_group`) and returns its results: weights as
safetensors bytes, history, summary. The driver writes each run directory atomically and
indexes it (:func:`bnstruct.store.store_result`), so workers need no shared filesystem, only
bnstruct installed; a run's files are those the local executor writes.

Faults: a task whose worker process dies is retried by Ray (``max_retries``); an exception
raised by a task (a bad config, out of memory) is not retried: the batch's runs are reported
as failed and the others finish. A diverged network is a result (status ``diverged``), never
a failure. On Ctrl-C the results already returned are written, the running tasks are
cancelled and ``KeyboardInterrupt`` propagates; the same sweep again trains only what is
missing (unfinished runs start over: tasks keep no checkpoints).

Ray is optional (``pip install 'bnstruct[ray]'``); this module imports it only when used.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import BnstructError, ConfigError
from ..store import Run, RunResult, store_result, train_group
from . import _record

__all__ = ["require_ray", "run_ray", "ExecutionFailed", "MAX_RETRIES"]

#: retries of a task whose worker died (Ray's ``max_retries``)
MAX_RETRIES = 3
#: testing only: a directory; a task that finds ``stall`` in it takes it, writes its pid to
#: ``pid`` and sleeps (so a test can kill its worker mid-task)
TEST_HOOK = "BNSTRUCT_RAY_TEST_HOOK"


class ExecutionFailed(BnstructError):
    """Some runs failed (their task raised or kept dying); the others finished.

    ``errors`` maps run name to a one-line error; ``runs`` holds the finished runs by name."""

    def __init__(self, errors: dict[str, str], runs: dict[str, Run]) -> None:
        self.errors = dict(errors)
        self.runs = dict(runs)
        first = next(iter(self.errors.items()))
        super().__init__(f"{len(self.errors)} run(s) failed, {len(self.runs)} finished; "
                         f"{first[0]}: {first[1]}")


def require_ray() -> None:
    """Raise a one-line :class:`ConfigError` when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'bnstruct[ray]'") from None


def _train_task(config_dicts: list[dict[str, Any]], threads: int) -> list[dict[str, Any]]:
    """Body of one Ray task: train a batch in memory, return plain values (no bnstruct
    classes cross the wire, only bytes, strings and JSON values)."""
    import torch

    torch.set_num_threads(max(1, threads))
    hook = os.environ.get(TEST_HOOK)
    if hook:
        stall = Path(hook) / "stall"
        try:
            os.rename(stall, Path(hook) / f"stall.{os.getpid()}")
        except FileNotFoundError:
            pass
        else:
            (Path(hook) / "pid.tmp").write_text(str(os.getpid()))
            os.replace(Path(hook) / "pid.tmp", Path(hook) / "pid")
            time.sleep(120)
    configs = [RunConfig.from_dict(d) for d in config_dicts]
    return [r.__dict__.copy() for r in train_group(configs)]


def _one_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None)
    err = cause if isinstance(cause, BaseException) else e
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def run_ray(batches: list[list[RunConfig]], root: Path, done: dict[str, Run],
            unique: dict[str, RunConfig], progress: Callable[[RunConfig], None] | None, *,
            address: str | None = None, cpus_per_task: float = 1,
            gpus_per_task: float = 0, max_retries: int = MAX_RETRIES) -> dict[str, str]:
    """Train ``batches`` as Ray tasks and write their runs into ``root`` (filling ``done``,
    calling ``progress(config)`` per run); returns ``{run name: error}`` of the failed runs.

    Uses the Ray instance this process is connected to; else joins ``address`` (``auto``,
    ``ray://host:10001``, ``host:6379``); else starts a local instance with this machine's
    cores and no dashboard, shut down at the end."""
    import ray

    from . import available_cores

    if cpus_per_task <= 0 or gpus_per_task < 0:
        raise ConfigError(f"--cpus-per-task must be > 0 and --gpus-per-task >= 0, got "
                          f"{cpus_per_task} and {gpus_per_task}")
    if not batches:
        return {}
    started = False
    if not ray.is_initialized():
        if address is None:
            ray.init(address="local", num_cpus=available_cores(), include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
            started = True
        else:
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"cannot join the Ray cluster at {address!r}: "
                                  f"{_one_line(e)}") from None
    errors: dict[str, str] = {}
    try:
        task = ray.remote(_train_task).options(
            num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries,
            retry_exceptions=False)
        threads = max(1, int(cpus_per_task))
        refs = {task.remote([c.to_dict() for c in b], threads): b for b in batches}

        def collect(ready: list[Any]) -> None:
            for ref in ready:
                batch = refs.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayError as e:
                    for c in batch:
                        errors[c.default_name()] = _one_line(e)
                    continue
                for d in results:
                    _record(store_result(root, RunResult(**d)), done, unique, progress)

        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                collect(ready)
        except KeyboardInterrupt:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
            collect(ready)  # keep what has already come back
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()
    return errors
