"""The local executor: batches on a training thread of this process and on worker processes.

Every batch trains through :func:`~bnstruct.executors.train_group` with its checkpoints in
the store, and every result is written by the driver (:func:`bnstruct.store.write_result`),
whichever worker trained it. Worker processes return :class:`~bnstruct.store.RunResult`
records to the driver through the pool.

Stopping is one :class:`~bnstruct.training.StopToken` whose event is a ``multiprocessing``
Event of the pool's context: the driver's Ctrl-C handler (:func:`deferred_sigint`) sets it,
the driver's training thread and every worker process read it after each step. Worker
processes ignore SIGINT (a terminal's Ctrl-C is the driver's), so an idle worker never dies
of one. An error, or a second Ctrl-C, sets the token too, and the driver waits for every
worker to stop at a step boundary before it raises: no run trains on after its claim is
released. A worker whose driver dies (``kill -9``) stops at its next step boundary too and
exits (a watchdog thread checks the driver's pid every :data:`DRIVER_POLL` seconds), and
while it trains it holds
the driver's claims (:func:`~bnstruct.store.join_claims`), so a new driver waits for it
instead of training the same runs beside it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from ..config import RunConfig, resolve_device
from ..store import (
    RunResult,
    join_claims,
    leave_claims,
    open_run,
    pid_alive,
    prepare,
    preparing,
    stored_task,
)
from ..training import StopToken, deferred_sigint
from ._group import train_group

__all__ = ["run_local", "train_claimed", "WORKER_PRELOAD"]

Sink = Callable[[RunResult], None]

#: what the worker processes' parent (the forkserver) imports once, before any worker starts:
#: a worker forked from it starts in milliseconds instead of importing torch itself (about
#: 2 s here) and ``torch._dynamo`` (1.3 s more, imported by ``torch.optim`` on first use).
#: Each worker still imports the driver's main module, as under ``spawn``.
WORKER_PRELOAD = ("torch", "torch._dynamo", "bnstruct.training", "bnstruct.store")

_WORKER_STOP: StopToken | None = None  # in a worker process: the driver's stop token


def train_claimed(batch: Sequence[RunConfig], root: Path, stop: StopToken
                  ) -> list[RunResult]:
    """Train a batch of claimed configs with checkpoints in ``root`` (each run's directory
    and ``config.json`` are made first, so a stopped run can be resumed)."""
    root = Path(root)
    paths = [open_run(c, root, c.default_name(), True) for c in batch]
    task = stored_task(batch[0], paths[0])
    for c in batch:
        c.model.check(task.d_in, task.d_out)  # fails before anything is written
        resolve_device(c.device)
    with preparing(paths):
        for c, p in zip(batch, paths, strict=True):
            prepare(c, root, p, task)
        return train_group(batch, dirs=paths, task=task, stop=stop)


def worker_context() -> Any:
    """On Linux, ``multiprocessing``'s ``forkserver`` context, preloaded with
    :data:`WORKER_PRELOAD`; elsewhere ``spawn`` (macOS: forking a process that has loaded
    torch is not safe there). The forkserver is a clean process started once per driver
    process and kept until it exits, so every later pool forks its workers from a warm,
    never-threaded process (unlike forking the driver, which may hold OpenMP or progress-bar
    threads). Workers see the environment of the moment the forkserver started."""
    import multiprocessing as mp

    if sys.platform != "linux":  # pragma: no cover - not Linux
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(WORKER_PRELOAD))
    return ctx


#: how often a worker process checks that its driver still runs (seconds)
DRIVER_POLL = 0.2
_TRAINING = threading.Event()  # in a worker process: a batch is being trained


def _watch_driver(driver: int, stop: StopToken) -> None:
    """A worker process's watchdog thread: once the driver is gone (``kill -9``), stop the
    batch being trained at its next step boundary (with a checkpoint), then exit: an idle
    pool worker would otherwise wait for tasks forever and keep the forkserver alive."""
    while pid_alive(driver):
        time.sleep(DRIVER_POLL)
    stop.set()
    deadline = time.monotonic() + 60
    while _TRAINING.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    os._exit(0)


def _init_worker(threads: int, event: Any, driver: int) -> None:
    """Set up a worker process: ``threads`` PyTorch threads, the driver's stop event (and
    its pid, to stop if it dies), and a terminal's Ctrl-C ignored (it is the driver's, which
    then sets the event)."""
    import torch

    global _WORKER_STOP
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_STOP = StopToken(event)
    threading.Thread(target=_watch_driver, args=(driver, _WORKER_STOP), daemon=True,
                     name="bnstruct-driver-watch").start()


def _in_worker(config_dicts: list[dict[str, Any]], store: str) -> list[RunResult]:
    """Body of a worker process's task: a batch trained, its results sent back. The worker
    joins its driver's claims on the runs while it trains them (:func:`join_claims`)."""
    stop = _WORKER_STOP if _WORKER_STOP is not None else StopToken()
    if stop.is_set():
        return []
    configs = [RunConfig.from_dict(d) for d in config_dicts]
    names = [c.default_name() for c in configs]
    _TRAINING.set()
    join_claims(store, names)
    try:
        return train_claimed(configs, Path(store), stop)
    finally:
        leave_claims(store, names)
        _TRAINING.clear()


def _worker_died(stop: StopToken) -> BaseException:
    """What to raise when the pool breaks: the interrupt if a Ctrl-C came (it also reaches a
    forkserver still importing, which then dies), else what happened and what to do."""
    if stop.presses:
        return KeyboardInterrupt()
    return RuntimeError(
        "a worker process died (killed, out of memory, or the main script runs execute() "
        "without an `if __name__ == \"__main__\":` guard); finished runs are in the store, "
        "run again to train the rest")


def _run_here(batches: Sequence[Sequence[RunConfig]], root: Path, threads: int,
              sink: Sink) -> None:
    """The batches one after another in this process with ``threads`` PyTorch threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with deferred_sigint() as stop:
            for batch in batches:
                for r in train_claimed(batch, root, stop):
                    sink(r)
                if stop.is_set():
                    raise KeyboardInterrupt
    finally:
        torch.set_num_threads(before)


class _Pool:
    """This process's training thread plus ``n - 1`` worker processes, one stop token."""

    def __init__(self, root: Path, n: int, threads: int) -> None:
        ctx = worker_context()
        self.root, self.n = root, n
        self.stop = StopToken.for_processes(ctx)
        self.here = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bnstruct-train")
        self.procs = ProcessPoolExecutor(max_workers=n - 1, mp_context=ctx,
                                         initializer=_init_worker,
                                         initargs=(threads, self.stop.event, os.getpid()))
        self.running: dict[Future[Any], bool] = {}  # future: trained in this process?

    def _train_here(self, batch: Sequence[RunConfig]) -> list[RunResult]:
        with deferred_sigint(self.stop):
            return train_claimed(batch, self.root, self.stop)

    def fill(self, queue: list[Sequence[RunConfig]]) -> None:
        """Hand out batches to idle workers (longest first: ``queue`` is in that order)."""
        while queue and not self.stop.is_set() and not any(self.running.values()):
            self.running[self.here.submit(self._train_here, queue.pop(0))] = True
        while queue and not self.stop.is_set() and (
                sum(not here for here in self.running.values()) < self.n - 1):
            b = [c.to_dict() for c in queue.pop(0)]
            try:  # the first submit starts the forkserver
                self.running[self.procs.submit(_in_worker, b, str(self.root))] = False
            except (BrokenProcessPool, EOFError, OSError) as e:
                raise _worker_died(self.stop) from e

    def collect(self, sink: Sink) -> None:
        """Wait up to 0.2 s for a batch to finish and write its results."""
        done, _ = wait_futures(self.running, timeout=0.2, return_when=FIRST_COMPLETED)
        for f in done:
            del self.running[f]
            try:
                results = f.result()
            except BrokenProcessPool as e:
                raise _worker_died(self.stop) from e
            for r in results:
                sink(r)

    def close(self, clean: bool, sink: Sink) -> None:
        """After a clean finish the workers exit in the background; otherwise (an error, a
        second Ctrl-C) every worker is stopped at a step boundary and waited for, and the
        runs it stopped are written (status ``interrupted``, resumable) while the error
        propagates."""
        try:
            if not clean:
                self.stop.set()
                wait_futures(list(self.running))
                for f in self.running:
                    with contextlib.suppress(Exception):  # the first error is raised
                        for r in f.result():
                            with contextlib.suppress(Exception):
                                sink(r)
            self.procs.shutdown(wait=not clean, cancel_futures=True)
        finally:
            self.here.shutdown(wait=True)


def _run_pool(batches: Sequence[Sequence[RunConfig]], root: Path, n: int, threads: int,
              sink: Sink) -> None:
    """The batches on ``n`` workers of ``threads`` PyTorch threads each (see the module
    docstring); ``sink`` is called from this (the calling) thread only."""
    import torch

    before = torch.get_num_threads()
    pool = _Pool(root, n, threads)
    clean = False
    try:
        torch.set_num_threads(threads)  # the training thread's (process-wide) threads
        with deferred_sigint(pool.stop):
            queue = list(batches)
            while queue or pool.running:
                pool.fill(queue)
                if not pool.running:
                    break
                pool.collect(sink)
            clean = True
        if pool.stop.is_set():
            raise KeyboardInterrupt
    finally:
        pool.close(clean, sink)
        torch.set_num_threads(before)


def run_local(batches: Sequence[Sequence[RunConfig]], root: Path, workers: int, threads: int,
              sink: Sink) -> None:
    """Train ``batches`` (claimed) into ``root`` on ``workers`` x ``threads``; each result
    goes to ``sink`` (the driver's writer) as soon as its batch is done. A Ctrl-C stops
    every batch at a step boundary with checkpoints and raises ``KeyboardInterrupt``."""
    if workers <= 1 or len(batches) <= 1:
        _run_here(batches, root, threads, sink)
    else:
        _run_pool(batches, root, workers, threads, sink)
