"""Executors: run a planned list of :class:`~bnstruct.config.RunConfig` into a store.

Every experiment lists its training runs up front (``plan``); :func:`execute` trains the ones
the store does not hold yet and returns every run, finished or reused, in the order given:

1. runs the store already has (finished: ``completed`` or ``diverged``) are loaded;
2. the rest are grouped into batches of networks that can train together
   (:func:`bnstruct.store.batch_key`, plus the step of their checkpoint, so an interrupted
   group resumes as a group), at most ``max_batch`` per batch;
3. the batches run one after another in this process, or, when there are several, on
   ``workers`` workers with ``threads`` PyTorch threads each (:func:`worker_plan`), largest
   batch first: a training thread of this process, which starts at once, and worker
   processes forked from a preloaded ``forkserver``, which start in milliseconds once it
   runs (its first start, once per process, imports torch: a few seconds).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import RunConfig
from ..errors import ConfigError
from ..store import (
    Run,
    batch_key,
    checkpoint_step,
    claim,
    finished,
    load_run,
    release,
    reuse_run,
    run_batch,
    wait_for,
)

if TYPE_CHECKING:
    from ..training import Presses

__all__ = ["execute", "plan_batches", "worker_plan", "batch_cost", "available_cores",
           "free_cores", "busy_cores", "simulate_schedule"]

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
    """Group ``configs`` (distinct, not finished) into batches: equal
    :func:`~bnstruct.store.batch_key` and equal checkpoint step, at most ``max_batch`` each,
    in the order of first appearance."""
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
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
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if workers is None:
        workers = max(1, min(cores, n_batches))
    workers = max(1, min(workers, max(n_batches, 1)))
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    return workers, threads or max(1, cores // workers)


#: how the driver asks its worker processes to stop (:func:`_interrupt_workers`): a signal
#: whose default action is to be ignored, so a request that reaches a worker before it has
#: set its handler is dropped (the driver repeats it), never fatal as SIGUSR1's default
#: would be (the Go runtime uses SIGURG for its preemption signal for similar reasons). ``None``
#: where there is none (Windows: workers keep Python's Ctrl-C handling).
STOP_SIGNAL: Any = getattr(signal, "SIGURG", None)
_STOP_ASKED = False  # in a worker process: the driver asked it to stop


def _init_worker(threads: int) -> None:
    """Set up a worker process: ``threads`` PyTorch threads; a Ctrl-C at the terminal is
    ignored (it is the driver's: the driver then sends :data:`STOP_SIGNAL`), so a worker
    waiting for its next batch never dies of one, which would break the pool and kill the
    others mid-step."""
    import torch

    torch.set_num_threads(threads)
    if STOP_SIGNAL is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(STOP_SIGNAL, _stop_asked)


def _stop_asked(signum: int, frame: Any) -> None:
    """:data:`STOP_SIGNAL` in a worker: stop the batch it trains at the next step boundary
    with checkpoints, or the next one it would start. Repeatable: never a second Ctrl-C."""
    global _STOP_ASKED
    from ..training import active_presses

    _STOP_ASKED = True
    presses = active_presses()
    if presses is not None:
        presses.stop()


def _run_in_worker(config_dicts: list[dict[str, Any]], store: str) -> list[str]:
    from ..training import deferred_sigint

    configs = [RunConfig.from_dict(d) for d in config_dicts]
    with deferred_sigint() as presses:
        if _STOP_ASKED:
            presses.stop()
        return [str(r.path) for r in run_batch(configs, store)]


#: what the worker processes' parent (the forkserver) imports once, before any worker starts:
#: a worker forked from it starts in milliseconds instead of importing torch itself (about
#: 2 s here) and ``torch._dynamo`` (1.3 s more, imported by ``torch.optim`` on first use).
#: Each worker still imports the driver's main module, as under ``spawn``.
WORKER_PRELOAD = ("torch", "torch._dynamo", "bnstruct.training", "bnstruct.store")


def _worker_context() -> Any:
    """On Linux, ``multiprocessing``'s ``forkserver`` context, preloaded with
    :data:`WORKER_PRELOAD`; elsewhere ``spawn`` (macOS: forking a process that has loaded
    torch is not safe there). The forkserver is a clean process started once per driver
    process and kept until it exits, so every later pool forks its workers from a warm,
    never-threaded process (unlike forking the driver, which may hold OpenMP or progress-bar
    threads). Its preload list is process-wide: bnstruct sets it; a forkserver already
    started by other code is used as it is. Workers see the environment of the moment the
    forkserver started."""
    import multiprocessing as mp

    if sys.platform != "linux":  # pragma: no cover - not Linux
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(WORKER_PRELOAD))
    return ctx


def _worker_died(presses: Presses) -> BaseException:
    """What to raise when the pool breaks: the interrupt if a Ctrl-C came (it also reaches a
    forkserver still importing, which then dies), else what happened and what to do."""
    if presses():
        return KeyboardInterrupt()
    return RuntimeError(
        "a worker process died (killed, out of memory, or the main script runs execute() "
        "without an `if __name__ == \"__main__\":` guard); finished runs are in the store, "
        "run again to train the rest")


def _train_here(presses: Presses, batch: list[RunConfig], root: Path) -> list[Run]:
    """:func:`~bnstruct.store.run_batch` in a helper thread, stopping on the driver's
    Ctrl-C counter ``presses``."""
    from ..training import deferred_sigint

    with deferred_sigint(share=presses):
        return run_batch(batch, root)


def _interrupt_workers(pool: Any) -> None:
    """Ask the pool's worker processes to stop (:data:`STOP_SIGNAL`): a busy one stops its
    batch at the next step boundary with checkpoints, as on a first Ctrl-C; an idle one
    starts no other. Idempotent."""
    if STOP_SIGNAL is None:  # pragma: no cover - Windows
        return
    procs = getattr(pool, "_processes", None) or {}  # pid -> Process (CPython's own)
    for proc in list(procs.values()):
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            os.kill(proc.pid, STOP_SIGNAL)


def execute(configs: Sequence[RunConfig], store: str | Path, *,
            progress: Callable[[RunConfig], None] | None = None,
            workers: int | None = None, threads: int | None = None,
            max_batch: int = MAX_BATCH, executor: str = "local", address: str | None = None,
            cpus_per_task: float = 1, gpus_per_task: float = 0) -> list[Run]:
    """Train (or reuse) every config of ``configs`` in ``store``; returns the runs in the
    order of ``configs`` (duplicates are trained once and returned each time).

    Runs the store already has are reused; the others train in batches (networks of one shape
    and stage structure together, see :func:`plan_batches`), on several workers when there
    are several batches (:func:`worker_plan`; ``workers`` and ``threads`` override it): a
    training thread of this process and worker processes. ``progress(config)`` is called, in
    the calling thread, once per distinct config when its run is finished (trained or
    reused). A Ctrl-C stops the running batches at a step boundary with checkpoints (status
    ``interrupted``; running this again resumes them), starts no other, and raises
    ``KeyboardInterrupt``; an error stops them the same way before it is raised. (Ctrl-C is
    caught only when this runs in the main thread with Python's default SIGINT handler;
    elsewhere, e.g. from another thread or under a handler of its own, the batches run to
    their end and only an error stops them early.)

    Worker processes are forked from a ``multiprocessing`` forkserver on Linux (``spawn``
    elsewhere; see :func:`_worker_context`) and import the main module: a script that calls
    this with several batches must guard its top level with ``if __name__ == "__main__":``
    (or pass ``workers=1``).

    ``executor="ray"`` runs the batches as Ray tasks instead (:mod:`bnstruct.executors._ray`;
    ``address``, ``cpus_per_task``, ``gpus_per_task``). Either way each run is claimed first
    (:func:`bnstruct.store.claim`): runs another process is training are waited for, not
    trained twice."""
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray, got {executor!r}")
    if executor == "ray":
        from ._ray import require_ray

        require_ray()
    root = Path(store)
    names = [c.default_name() for c in configs]
    unique: dict[str, RunConfig] = {}
    for n, c in zip(names, configs, strict=True):
        unique.setdefault(n, c)
    done: dict[str, Run] = {}
    pending = []
    for n, c in unique.items():
        if finished(root / n):
            # run_batch checks the stored config and loads the run
            _record(run_batch([c], root)[0], done, unique, progress)
        else:
            pending.append(c)
    errors: dict[str, str] = {}
    while pending:
        mine = [c for c in pending if claim(root, c.default_name())]
        theirs = [c.default_name() for c in pending if c not in mine]
        try:
            errors |= _train(mine, root, done, unique, progress, workers, threads, max_batch,
                             executor, address, cpus_per_task, gpus_per_task)
        finally:
            for c in mine:
                release(root, c.default_name())
        orphans = set(wait_for(root, theirs))  # trained elsewhere; retake abandoned ones
        for n in theirs:
            if n not in orphans:
                _record(reuse_run(root / n), done, unique, progress)
        pending = [unique[n] for n in theirs if n in orphans]
    if errors:
        from ._ray import ExecutionFailed

        raise ExecutionFailed(errors, done)
    return [done[n] for n in names]


def _train(pending: list[RunConfig], root: Path, done: dict[str, Run],
           unique: dict[str, RunConfig], progress: Callable[[RunConfig], None] | None,
           workers: int | None, threads: int | None, max_batch: int, executor: str,
           address: str | None, cpus_per_task: float, gpus_per_task: float
           ) -> dict[str, str]:
    """Train the claimed ``pending`` configs into ``root``, filling ``done``; returns
    ``{run name: error}`` of runs that failed (Ray only; the local executor raises)."""
    for c in list(pending):  # finished by another process before we claimed it
        if finished(root / c.default_name()):
            pending.remove(c)
            _record(reuse_run(root / c.default_name()), done, unique, progress)
    batches = plan_batches(pending, root, max_batch=max_batch)
    batches.sort(key=batch_cost, reverse=True)  # longest first: better balance
    if executor == "ray":
        from ._ray import run_ray

        return run_ray(batches, root, done, unique, progress, address=address,
                       cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
    n_workers, n_threads = worker_plan(len(batches), workers, threads=threads)
    if n_workers <= 1:
        _run_here(batches, root, n_threads, done, unique, progress)
    else:
        _run_pool(batches, root, n_workers, n_threads, done, unique, progress)
    return {}


def _record(r: Run, done: dict[str, Run], unique: dict[str, RunConfig],
            progress: Callable[[RunConfig], None] | None) -> None:
    """A finished run: into ``done``, and reported to ``progress``."""
    done[r.path.name] = r
    if progress is not None:
        progress(unique[r.path.name])


def _run_here(batches: list[list[RunConfig]], root: Path, threads: int,
              done: dict[str, Run], unique: dict[str, RunConfig],
              progress: Callable[[RunConfig], None] | None) -> None:
    """Run the batches one after another in this process with ``threads`` PyTorch threads."""
    import torch

    from ..training import deferred_sigint

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with deferred_sigint() as presses:
            for batch in batches:
                for r in run_batch(batch, root):
                    _record(r, done, unique, progress)
                if presses():
                    raise KeyboardInterrupt
    finally:
        torch.set_num_threads(before)


def _run_pool(batches: list[list[RunConfig]], root: Path, n_workers: int, threads: int,
              done: dict[str, Run], unique: dict[str, RunConfig],
              progress: Callable[[RunConfig], None] | None) -> None:
    """Run the batches on ``n_workers`` workers of ``threads`` PyTorch threads each: this
    process is one (a training thread: it starts at once, torch is imported and warm), the
    other ``n_workers - 1`` are worker processes (:func:`_worker_context`). Each worker
    takes the next batch, longest first, when it is free. ``progress`` is called from this
    (the calling) thread only.

    A Ctrl-C (at the terminal, or SIGINT to this process alone) stops every worker: this
    process's training thread reads the press, and the worker processes, which ignore
    SIGINT, are sent :data:`STOP_SIGNAL` until they have returned; each stops its batch at a
    step boundary with checkpoints and returns, and the remaining batches are not started.
    On any other way out (an error, a second Ctrl-C) every worker is stopped the same way and
    waited for, so no run trains on after its claim is released. After a clean finish the
    worker processes exit in the background."""
    from concurrent.futures import (
        FIRST_COMPLETED,
        Future,
        ProcessPoolExecutor,
        ThreadPoolExecutor,
        wait,
    )
    from concurrent.futures.process import BrokenProcessPool

    import torch

    from ..training import deferred_sigint

    before = torch.get_num_threads()
    here = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bnstruct-train")
    pool = ProcessPoolExecutor(max_workers=n_workers - 1, mp_context=_worker_context(),
                               initializer=_init_worker, initargs=(threads,))
    presses: Presses | None = None
    running: dict[Future[Any], bool] = {}  # future: trained in this process?
    clean = False
    try:
        torch.set_num_threads(threads)  # the training thread's (process-wide) threads
        with deferred_sigint() as presses:
            queue = list(batches)
            while queue or running:
                while queue and not presses() and not any(running.values()):
                    running[here.submit(_train_here, presses, queue.pop(0), root)] = True
                while queue and not presses() and (
                        sum(not mine for mine in running.values()) < n_workers - 1):
                    b = [c.to_dict() for c in queue.pop(0)]
                    try:  # the first submit starts the forkserver
                        running[pool.submit(_run_in_worker, b, str(root))] = False
                    except (BrokenProcessPool, EOFError, OSError) as e:
                        raise _worker_died(presses) from e
                if not running:
                    break
                finished_now, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                if presses():  # Ctrl-C (or kill -INT) reached this process: tell the workers
                    _interrupt_workers(pool)
                for f in finished_now:
                    del running[f]
                    try:
                        out = f.result()
                    except BrokenProcessPool as e:
                        raise _worker_died(presses) from e
                    for r in out:
                        _record(r if isinstance(r, Run) else load_run(r), done, unique,
                                progress)
            clean = True
        if presses():
            raise KeyboardInterrupt
    finally:
        try:
            if not clean:  # stop every worker at a step boundary and wait for it
                if presses is not None:
                    presses.stop()
                pending = {f for f in running if not f.done()}
                while pending:
                    _interrupt_workers(pool)
                    _, pending = wait(pending, timeout=0.2)
            pool.shutdown(wait=not clean, cancel_futures=True)
        finally:
            here.shutdown(wait=True)
            torch.set_num_threads(before)
