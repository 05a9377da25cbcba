"""Train a group of run configurations in memory: the one function every executor calls.

:func:`train_group` builds the task and the models, trains them as one batch through the one
loop (:func:`bnstruct.training.train_members`) and returns :class:`~bnstruct.store.RunResult`
records (bytes, strings and JSON values), which the driver writes with
:func:`bnstruct.store.write_result`. Whether a run trains alone, in a batch of any size, in
the driver, a worker process or a Ray task, it goes through this function and gets the same
weights bit for bit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import DTYPES, RunConfig, resolve_device
from ..errors import ConfigError
from ..store import RunResult, checkpoint_prefix, config_record, stored_task, summarize, task_bytes
from ..tasks import Task
from ..training import StopToken, TrainResult, train_members

__all__ = ["train_group", "batch_key"]


def batch_key(config: RunConfig) -> tuple[Any, ...]:
    """Configs with equal keys can train in one batch: the same task (data), model family
    and shape, dtype, device, stage structure (optimizer, steps and batch size per stage),
    ``log_every`` and ``checkpoint_every``; seeds, ``lam`` and ``lr`` may differ."""
    return (json.dumps(config.task.to_dict(), sort_keys=True), config.model, config.dtype,
            config.device, tuple((s.optimizer, s.steps, s.batch_size) for s in config.stages),
            config.log_every, config.checkpoint_every)


def _result(config: RunConfig, name: str, task: Task, res: TrainResult,
            weights: dict[str, Any], created: str, device: str) -> RunResult:
    from safetensors.torch import save as save_bytes

    return RunResult(
        name=name, config_json=config_record(config, task),
        weights=bytes(save_bytes({k: v.detach().cpu().contiguous() for k, v in
                                  weights.items()})),
        history_csv=res.history.to_csv(index=False),
        summary=summarize(res, created=created, device=device, bn_rank=task.bn_rank),
        data=task_bytes(task) if config.task.data is not None else None)


def train_group(configs: Sequence[RunConfig], *, dirs: Sequence[str | Path] | None = None,
                task: Task | None = None, stop: StopToken | None = None,
                on_row: Callable[[int, dict[str, Any]], None] | None = None
                ) -> list[RunResult]:
    """Train ``configs`` (equal :func:`batch_key`) as one batch and return one
    :class:`~bnstruct.store.RunResult` per config; nothing but checkpoints is written.

    ``dirs``: the run directories that hold the checkpoints (``checkpoint.*``, every
    ``checkpoint_every`` steps, at stage ends and when stopped); existing ones are
    continued. ``None`` (a Ray task): no checkpoints. ``task`` overrides the stored or
    rebuilt task. ``stop``: the token that stops the batch at a step boundary (its runs are
    then ``interrupted``).
    ``on_row(i, row)`` sees each history row of ``configs[i]``."""
    configs = list(configs)
    if not configs:
        return []
    if len({batch_key(c) for c in configs}) != 1:
        raise ConfigError("train_group needs configs of one batch_key (task, model, dtype, "
                          "device, stage structure, log_every, checkpoint_every)")
    c0 = configs[0]
    device = resolve_device(c0.device)
    paths = None if dirs is None else [Path(d) for d in dirs]
    if paths is not None and len(paths) != len(configs):
        raise ConfigError("train_group needs one run directory per config")
    if task is None:
        task = stored_task(c0, paths[0]) if paths is not None else c0.task.build()
    models = [c.model.build(task.d_in, task.d_out, seed=c.seed, dtype=DTYPES[c0.dtype],
                            device=device) for c in configs]
    created = time.strftime("%Y-%m-%dT%H:%M:%S")
    results = train_members(
        models, task, [c.stages for c in configs], [c.seed for c in configs],
        stop=stop if stop is not None else StopToken(), log_every=c0.log_every,
        checkpoints=None if paths is None else [checkpoint_prefix(p) for p in paths],
        checkpoint_every=c0.checkpoint_every if paths is not None else None,
        resume=paths is not None, on_row=on_row)
    names = [c.default_name() for c in configs] if paths is None else [p.name for p in paths]
    return [_result(c, n, task, r, m.state_dict(), created, str(device))
            for c, n, m, r in zip(configs, names, models, results, strict=True)]
