"""The plan of an execution: which runs are reused, how the rest are batched, in which order,
on how many workers; made once, shown by ``bnstruct sweep --dry-run`` and carried out by
:func:`bnstruct.executors.execute`.

Executors are typed: :class:`LocalExecutor` (this machine: a training thread of this process
and worker processes) and :class:`RayExecutor` (Ray tasks on a local instance or a cluster).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError
from ..store import checkpoint_step, finished
from ._group import batch_key

__all__ = ["LocalExecutor", "RayExecutor", "Executor", "Plan", "make_plan", "plan_batches",
           "worker_plan", "batch_cost", "available_cores", "free_cores", "busy_cores",
           "simulate_schedule", "MAX_BATCH"]

#: default largest batch (networks per batched step)
MAX_BATCH = 64


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: the cost of one layer of a batched step beyond its multiply-adds, in multiply-adds:
#: about 0.6 of a width-64 layer on 256 points (2-core CPU, one thread: a step of one
#: depth-16 network took 3.1 ms, of three 6.9 ms; see ``bnstruct bench plan``)
LAYER_OVERHEAD = 6e5


def batch_cost(configs: Sequence[RunConfig]) -> float:
    """Relative cost of training ``configs`` as one batch: steps x (networks x training
    points x multiply-adds per point of one network's hidden layers + layers x
    :data:`LAYER_OVERHEAD`). The points are the task's ``n_train`` when the config sets it,
    else 256; input and output widths count as 1 (they are not known before the task is
    built). Only the order matters: the executor starts the costliest batches first."""
    c = configs[0]
    w = c.model.width
    hidden = [w] * (c.model.depth - 1) if isinstance(w, int) else list(w)
    sizes = [1, *hidden, 1]
    mac = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)) + 1
    n = dict(c.task.to_dict().get("kwargs") or {}).get("n_train", 256)
    n = n if isinstance(n, int) and n > 0 else 256
    return float(c.steps * (len(configs) * n * mac + c.model.depth * LAYER_OVERHEAD))


def simulate_schedule(costs: Sequence[float], workers: int) -> float:
    """Finish time of jobs of durations ``costs`` handed out in that order, each to the first
    free of ``workers`` workers (the local executor's queue)."""
    free = [0.0] * max(1, workers)
    for c in costs:
        k = free.index(min(free))
        free[k] += c
    return max(free)


def plan_batches(configs: Sequence[RunConfig], store: str | Path, *,
                 max_batch: int = MAX_BATCH) -> list[list[RunConfig]]:
    """Group ``configs`` (distinct, not finished) into batches: equal :func:`batch_key` and
    equal checkpoint step, at most ``max_batch`` each, in the order of first appearance."""
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(f"max_batch must be an integer >= 1, got {max_batch!r}")
    root = Path(store)
    groups: dict[tuple[Any, ...], list[RunConfig]] = {}
    for c in configs:
        key = (batch_key(c), checkpoint_step(root / c.default_name()))
        groups.setdefault(key, []).append(c)
    return [g[i:i + max_batch] for g in groups.values() for i in range(0, len(g), max_batch)]


def _cpu_times(cpus: set[int]) -> tuple[float, float] | None:
    """``(busy, total)`` jiffies summed over ``cpus`` from ``/proc/stat`` (``None`` where
    there is no such file: not Linux)."""
    try:
        with open("/proc/stat") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, *vals = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        v = [float(x) for x in vals[:8]]  # user nice system idle iowait irq softirq steal
        idle = v[3] + (v[4] if len(v) > 4 else 0.0)
        busy += sum(v) - idle
        total += sum(v)
    return (busy, total) if total > 0 else None


def busy_cores(interval: float = 0.15) -> float | None:
    """Cores (of those this process may use) busy with other work right now: the busy share
    of their time in ``/proc/stat`` over ``interval`` seconds, times their number. ``None``
    where ``/proc/stat`` is missing (not Linux). This process sleeps meanwhile, so what it
    sees is other work."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return None
    a = _cpu_times(cpus)
    if a is None:
        return None
    time.sleep(interval)
    b = _cpu_times(cpus)
    if b is None or b[1] <= a[1]:
        return None
    return len(cpus) * (b[0] - a[0]) / (b[1] - a[1])


def free_cores(cores: int | None = None, *, interval: float = 0.15) -> int:
    """Cores not busy with other work: ``cores`` minus the cores busy now (rounded;
    :func:`busy_cores`, a ``/proc/stat`` reading over ``interval`` seconds), at least 1 (on a
    shared machine, a worker or thread more than the free cores only contends). Not Linux:
    the 1-minute load average stands in for the busy cores, or 0 where there is none.

    An instantaneous reading, not the load average: the load average lags by minutes, so
    right after other work (a previous benchmark, a finished job) it still counts cores as
    busy that are idle."""
    cores = cores or available_cores()
    busy = busy_cores(interval)
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover - no load average
            busy = 0.0
    return max(1, min(cores, cores - math.floor(busy + 0.5)))


def worker_plan(n_batches: int, workers: int | None = None, cores: int | None = None,
                threads: int | None = None) -> tuple[int, int]:
    """``(workers, PyTorch threads per worker)`` for ``n_batches`` batches on ``cores`` cores
    (default: :func:`free_cores`); with several workers, one is a training thread of the
    calling process and the others are worker processes (:func:`execute`).

    Rule, from ``bnstruct bench sweep`` on a shared 2-core CPU (6 batches of width-64 nets):
    idle, 2 workers x 1 thread took 10.1-12.1 s where 1 worker x 2 threads took 12.8-18.6 s
    (nine readings; matmuls this small split badly across threads), under contention 43.5 s
    against 244 s (contended threads stall each other), and with one core busy elsewhere 1
    worker x 1 thread (16.1 s) beat 2 x 1 (25.0 s). So: one single-thread worker per free
    core while there are batches for them; cores left over (fewer batches than cores) become
    threads. ``workers`` overrides the number of workers (threads are then
    ``cores // workers``, at least 1), ``threads`` the threads per worker."""
    cores = cores or free_cores()
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if workers is None:
        workers = max(1, min(cores, n_batches))
    workers = max(1, min(workers, max(n_batches, 1)))
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    return workers, threads or max(1, cores // workers)


@dataclass(frozen=True)
class LocalExecutor:
    """Train on this machine: ``workers`` workers (default: one single-thread worker per free
    core, :func:`worker_plan`), ``threads`` PyTorch threads each, at most ``max_batch``
    networks per batched step. With several workers one is a training thread of this
    process and the others are worker processes."""

    workers: int | None = None
    threads: int | None = None
    max_batch: int = MAX_BATCH

    def __post_init__(self) -> None:
        for name in ("workers", "threads"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"LocalExecutor.{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ConfigError(f"max_batch must be an integer >= 1, got {self.max_batch!r}")


@dataclass(frozen=True)
class RayExecutor:
    """Train each batch as a Ray task (:mod:`bnstruct.executors._ray`) on the cluster at
    ``address`` (``auto``, ``ray://host:10001``, ``host:6379``; ``None``: a private local
    instance), each task with ``cpus`` CPUs and ``gpus`` GPUs (fractional: 0.25 puts four
    tasks on one GPU)."""

    address: str | None = None
    cpus: float = 1
    gpus: float = 0
    max_batch: int = MAX_BATCH

    def __post_init__(self) -> None:
        if self.address is not None and not isinstance(self.address, str):
            raise ConfigError(f"RayExecutor.address must be a string or None, got "
                              f"{self.address!r}")
        if any(isinstance(v, bool) for v in (self.cpus, self.gpus)) or not (
                isinstance(self.cpus, int | float) and self.cpus > 0) or not (
                isinstance(self.gpus, int | float) and self.gpus >= 0):
            raise ConfigError(f"RayExecutor needs cpus > 0 and gpus >= 0, got {self.cpus!r} "
                              f"and {self.gpus!r}")
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ConfigError(f"max_batch must be an integer >= 1, got {self.max_batch!r}")


Executor = LocalExecutor | RayExecutor


@dataclass(frozen=True)
class Plan:
    """What :func:`~bnstruct.executors.execute` will do with ``configs`` in ``store``:
    ``reused`` (finished runs, loaded as they are), ``batches`` (the rest, in the order they
    start: longest first), and on how many ``workers`` x ``threads`` (local executor)."""

    store: Path
    configs: tuple[RunConfig, ...]
    reused: tuple[RunConfig, ...]
    batches: tuple[tuple[RunConfig, ...], ...]
    executor: Executor = field(default_factory=LocalExecutor)
    workers: int = 1
    threads: int = 1

    @property
    def todo(self) -> int:
        """Runs to train."""
        return sum(len(b) for b in self.batches)

    def describe(self) -> str:
        """One line: what runs, what is reused, on what."""
        head = (f"{len(self.configs)} run(s): {len(self.reused)} in the store, "
                f"{self.todo} to train")
        if not self.batches:
            return head
        if isinstance(self.executor, RayExecutor):
            where = self.executor.address or "a local instance"
            return f"{head} in {len(self.batches)} batch(es) as Ray tasks on {where}"
        return (f"{head} in {len(self.batches)} batch(es) on {self.workers} worker(s) x "
                f"{self.threads} thread(s)")


def _unique(configs: Sequence[RunConfig]) -> list[RunConfig]:
    seen: dict[str, RunConfig] = {}
    for c in configs:
        seen.setdefault(c.default_name(), c)
    return list(seen.values())


def make_plan(configs: Sequence[RunConfig], store: str | Path,
              executor: Executor | None = None, *, cores: int | None = None) -> Plan:
    """The :class:`Plan` of ``configs`` in ``store`` (duplicates count once)."""
    executor = LocalExecutor() if executor is None else executor
    if isinstance(configs, str | bytes) or not all(isinstance(c, RunConfig) for c in configs):
        raise ConfigError("make_plan needs a sequence of RunConfig")
    if cores is not None and (isinstance(cores, bool) or not isinstance(cores, int)
                              or cores < 1):
        raise ConfigError(f"cores must be an integer >= 1 or None, got {cores!r}")
    if not isinstance(executor, LocalExecutor | RayExecutor):
        raise ConfigError(f"executor must be a LocalExecutor or a RayExecutor, got "
                          f"{executor!r}")
    root = Path(store)
    unique = _unique(configs)
    reused = [c for c in unique if finished(root / c.default_name())]
    todo = [c for c in unique if c not in reused]
    batches = plan_batches(todo, root, max_batch=executor.max_batch)
    batches.sort(key=batch_cost, reverse=True)  # longest first: better balance
    workers, threads = 1, 1
    if isinstance(executor, LocalExecutor):
        workers, threads = worker_plan(len(batches), executor.workers, cores,
                                       executor.threads)
    return Plan(root, tuple(configs), tuple(reused), tuple(tuple(b) for b in batches),
                executor, workers, threads)
