"""Executors: run a planned list of :class:`~bnstruct.config.RunConfig` into a store.

Every experiment lists its training runs up front (``plan``); an executor trains the ones the
store does not hold yet and returns every run, finished or reused, in the order given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import RunConfig
from ..store import Run, run

__all__ = ["execute"]


def execute(configs: Sequence[RunConfig], store: str | Path, *,
            progress: Callable[[RunConfig], None] | None = None) -> list[Run]:
    """Train (or reuse) every config of ``configs`` in ``store``, one after another; returns
    the runs in the order of ``configs`` (duplicates are trained once). ``progress(config)``
    is called before each run."""
    done: dict[str, Run] = {}
    out = []
    for cfg in configs:
        key = cfg.default_name()
        if key not in done:
            if progress is not None:
                progress(cfg)
            done[key] = run(cfg, store, resume=True, progress=False)
        out.append(done[key])
    return out
