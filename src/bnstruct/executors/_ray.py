"""The Ray executor: the batches of a sweep as Ray tasks, on a local instance or a cluster.

Each batch (a group of configs that train together, :func:`~bnstruct.executors.plan_batches`)
becomes one Ray task (``num_cpus=RayExecutor.cpus``, ``num_gpus=RayExecutor.gpus``) that
trains it in memory (:func:`bnstruct.executors.train_group`, as every executor does) and
returns its results: weights as safetensors bytes, history, summary. The driver writes each
run directory atomically and indexes it (:func:`bnstruct.store.write_result`), so workers
need no shared filesystem, only bnstruct installed; a run's files are those the local
executor writes.

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
from collections.abc import Callable, Sequence
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError
from ..store import RunResult
from ..training import hold_sigint
from ._group import train_group
from ._plan import RayExecutor, available_cores

__all__ = ["require_ray", "run_ray", "MAX_RETRIES"]

#: retries of a task whose worker died (Ray's ``max_retries``)
MAX_RETRIES = 3


def require_ray() -> None:
    """Raise a one-line :class:`ConfigError` when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("the Ray executor needs Ray: pip install 'bnstruct[ray]'") from None


def _train_task(config_dicts: list[dict[str, Any]], threads: int) -> list[dict[str, Any]]:
    """Body of one Ray task: train a batch in memory, return plain values (no bnstruct
    classes cross the wire, only bytes, strings and JSON values)."""
    import torch

    torch.set_num_threads(max(1, threads))
    configs = [RunConfig.from_dict(d) for d in config_dicts]
    return [r.__dict__.copy() for r in train_group(configs)]


def _one_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None)
    err = cause if isinstance(cause, BaseException) else e
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _connect(address: str | None) -> bool:
    """Join the Ray instance this process is connected to, else ``address``, else start a
    private local one; returns whether one was started (to shut it down at the end)."""
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        ray.init(address="local", num_cpus=available_cores(), include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
        return True
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: "
                          f"{_one_line(e)}") from None
    return False


def run_ray(batches: Sequence[Sequence[RunConfig]], sink: Callable[[RunResult], None],
            executor: RayExecutor, *, max_retries: int = MAX_RETRIES) -> dict[str, str]:
    """Train ``batches`` as Ray tasks and hand each result to ``sink`` (the driver's writer)
    as it comes back; returns ``{run name: error}`` of the failed runs. On Ctrl-C the
    results already back are written, the running tasks are cancelled (Ray's cancellation is
    this executor's stop signal) and ``KeyboardInterrupt`` propagates."""
    import ray

    require_ray()
    if not batches:
        return {}
    started = _connect(executor.address)
    errors: dict[str, str] = {}
    try:
        task = ray.remote(_train_task).options(
            num_cpus=executor.cpus, num_gpus=executor.gpus, max_retries=max_retries,
            retry_exceptions=False)
        threads = max(1, int(executor.cpus))
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
                with hold_sigint():  # a batch's results are written whole
                    for d in results:
                        sink(RunResult(**d))

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
