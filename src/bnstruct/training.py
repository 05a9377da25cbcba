r"""L2-regularized training in stages, with checkpoints, resume and divergence detection.

Objective (THEORY section 1), biases included:

.. math::

    \mathcal L(\theta) = \frac1N \sum_{i=1}^N \|f_\theta(x_i) - y_i\|^2 + \lambda \|\theta\|^2 .

The penalty's gradient :math:`2\lambda\theta` is applied through the optimizer's coupled weight
decay, i.e. PyTorch's ``weight_decay = 2 * lam`` for ``torch.optim.SGD`` / ``torch.optim.Adam``
(*not* AdamW's decoupled decay). ``fit`` is the mean over points of the squared error summed
over output coordinates (``mse_loss(reduction="sum") / N``), not PyTorch's default mean over
all entries.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from torch import nn

from ._io import atomic_write_text, save_tensors
from .errors import ConfigError
from .models import param_norm2
from .tasks import Task

__all__ = ["Stage", "default_recipe", "parse_stage", "train", "TrainResult", "HISTORY_COLUMNS"]

OPTIMIZERS = ("gd", "adam")
HISTORY_COLUMNS = ["step", "stage", "lr", "lam", "objective", "fit", "penalty", "param_norm2",
                   "rel_fit", "test_error", "rel_test_error", "seconds"]


@dataclass(frozen=True)
class Stage:
    r"""One stage of a run: ``steps`` steps of ``optimizer`` at learning rate ``lr`` on the
    objective with penalty weight ``lam`` (multiplies :math:`\|\theta\|^2`; PyTorch's
    ``weight_decay`` is ``2 * lam``). ``batch_size=None`` is full batch."""

    optimizer: Literal["gd", "adam"] = "adam"
    lr: float = 1e-3
    lam: float = 0.0
    steps: int = 1000
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive finite number, got {self.lr!r}")
        if not (isinstance(self.lam, (int, float)) and math.isfinite(self.lam) and self.lam >= 0):
            raise ConfigError(f"lam must be a non-negative finite number, got {self.lam!r}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise ConfigError(f"batch_size must be a positive integer or None, "
                              f"got {self.batch_size!r}")

    def __str__(self) -> str:
        bs = "" if self.batch_size is None else f":{self.batch_size}"
        return f"{self.optimizer}:{self.lr:g}:{self.lam:g}:{self.steps}{bs}"


def parse_stage(text: str) -> Stage:
    """Parse ``OPT:LR:LAM:STEPS[:BATCH]``, e.g. ``adam:1e-3:0.002:2000``."""
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise ConfigError(f"stage {text!r} must look like OPT:LR:LAM:STEPS[:BATCH], "
                          "e.g. adam:1e-3:0.002:2000")
    try:
        lr, lam, steps = float(parts[1]), float(parts[2]), int(parts[3])
        bs = int(parts[4]) if len(parts) == 5 else None
    except ValueError:
        raise ConfigError(f"stage {text!r}: LR and LAM must be numbers, STEPS and BATCH "
                          "integers") from None
    return Stage(parts[0], lr, lam, steps, bs)


def default_recipe(lam: float = 0.005, steps: int = 6000, lr: float = 1.5e-3) -> tuple[Stage, ...]:
    r"""Adam in three full-batch stages with a penalty warm-up (THEORY section 5):

    1. ``steps/6`` steps at ``lr`` with no penalty (fit first),
    2. ``5 steps/12`` steps at ``lr`` with the target ``lam``,
    3. the rest at ``lr * 4/15`` with ``lam`` (settle into the regularized minimum).

    Starting at the full penalty collapses deep nets to the zero function; fitting first and
    then turning the penalty on lets the norm fall into the bottleneck regime. ``lam``
    multiplies :math:`\|\theta\|^2` (PyTorch ``weight_decay = 2 * lam``, coupled). On the
    default ``composite`` task (k = 2, depth 12, width 64, 256 points, unit-scale data) this
    reaches a relative train error of about 1.6% with :math:`\|\theta\|^2 / (kL) \approx 1.9`
    and a two-dimensional bottleneck in the early middle layers (measured on a 2-core CPU in
    about 10 s; larger ``lam`` gives a cleaner bottleneck and a larger fit error)."""
    if not isinstance(steps, int) or steps < 3:
        raise ConfigError(f"the default recipe needs steps >= 3, got {steps!r}")
    n1 = max(1, steps // 6)
    n2 = max(1, (5 * steps) // 12)
    return (Stage("adam", lr, 0.0, n1),
            Stage("adam", lr, lam, n2),
            Stage("adam", lr * 4 / 15, lam, steps - n1 - n2))


@dataclass
class TrainResult:
    """Outcome of :func:`train`: ``status`` is ``completed``, ``diverged`` or ``interrupted``;
    ``history`` one row per logged step (columns :data:`HISTORY_COLUMNS`)."""

    status: str
    steps: int
    history: pd.DataFrame
    seconds: float
    diverged_at: int | None = None
    final: dict[str, float] = field(default_factory=dict)


def _make_optimizer(stage: Stage, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The stage's optimizer with the penalty as coupled weight decay ``2 * lam``.

    Fused kernels (one multi-tensor update per step) where PyTorch has them for this
    device/dtype, else the foreach implementation: same update rule, fewer kernel launches."""
    wd = 2.0 * stage.lam  # d/dtheta lam ||theta||^2 = 2 lam theta: coupled L2 decay
    cls = torch.optim.Adam if stage.optimizer == "adam" else torch.optim.SGD
    try:
        return cls(params, lr=stage.lr, weight_decay=wd, fused=True)
    except (RuntimeError, TypeError):
        return cls(params, lr=stage.lr, weight_decay=wd, foreach=True)


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, lam: float) -> dict[str, float]:
    """Full-batch objective terms and test error of ``model`` on ``task``."""
    n2 = float(param_norm2(model))
    fit = float((model(task.X) - task.Y).pow(2).sum(1).mean())
    test = float((model(task.X_test) - task.Y_test).pow(2).sum(1).mean())
    y2 = float(task.Y.pow(2).sum(1).mean())
    y2t = float(task.Y_test.pow(2).sum(1).mean())
    return {"objective": fit + lam * n2, "fit": fit, "penalty": lam * n2, "param_norm2": n2,
            "rel_fit": fit / y2, "test_error": test, "rel_test_error": test / y2t}


def _batch(seed: int, stage: int, local_step: int, bs: int, n: int) -> torch.Tensor:
    """Indices of minibatch ``local_step`` of a stage: epochs of ``n // bs`` batches, each
    epoch a permutation seeded by ``(seed, stage, epoch)``. Stateless, so resume is exact."""
    per_epoch = n // bs
    epoch, j = divmod(local_step, per_epoch)
    g = torch.Generator(device="cpu").manual_seed((int(seed) * 1_000_003 + stage) * 1_000_003
                                                  + epoch)
    return torch.randperm(n, generator=g)[j * bs:(j + 1) * bs]


def _state_tensors(model: nn.Module, opt: torch.optim.Optimizer | None
                   ) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    if opt is not None:
        for i, p in enumerate(opt.param_groups[0]["params"]):
            for k, v in opt.state.get(p, {}).items():
                out[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().clone().contiguous()
    return out


def _load_opt_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    for i, p in enumerate(opt.param_groups[0]["params"]):
        st = {k.split(".", 2)[2]: v.to(p.device) for k, v in tensors.items()
              if k.startswith(f"opt.{i}.")}
        if st:
            if "step" in st:
                st["step"] = st["step"].cpu()
            opt.state[p] = st


def train(model: nn.Module, task: Task, stages: Sequence[Stage] | None = None, *, seed: int = 0,
          log_every: int = 100, checkpoint: str | Path | None = None,
          checkpoint_every: int | None = None, resume: bool = False,
          progress: bool | None = None,
          callback: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    r"""Train ``model`` in place on ``task`` through ``stages`` (default :func:`default_recipe`).

    The data is moved to the model's device and dtype. Each stage gets a fresh optimizer.
    Minibatches (``Stage.batch_size``) are drawn without replacement per epoch, seeded by
    ``seed``: same seed, same machine, bit-identical weights.

    Args:
        log_every: history row every ``log_every`` steps (plus the first and the last step).
        checkpoint: path prefix of the checkpoint files (``.safetensors`` + ``.json``),
            written every ``checkpoint_every`` steps and on interrupt; with ``resume=True`` an
            existing checkpoint is continued and gives the same weights as an uninterrupted run.
        progress: a rich progress bar (default: when stderr is a terminal).
        callback: called as ``callback(step, row)`` after each history row.

    A non-finite loss or parameter stops the run: ``status="diverged"``, ``diverged_at`` is the
    global step (no exception). ``KeyboardInterrupt`` writes a checkpoint (when ``checkpoint``
    is set) and returns ``status="interrupted"``.
    """
    from safetensors.torch import load_file

    stages = tuple(default_recipe() if stages is None else stages)
    if not stages or not all(isinstance(s, Stage) for s in stages):
        raise ConfigError("stages must be a non-empty sequence of bnstruct.Stage")
    if not isinstance(log_every, int) or log_every < 1:
        raise ConfigError(f"log_every must be an integer >= 1, got {log_every!r}")
    if checkpoint_every is not None and checkpoint is None:
        raise ConfigError("checkpoint_every needs a checkpoint path")
    p0 = next(model.parameters())
    task = task.to(p0.device, p0.dtype)
    X, Y, N = task.X, task.Y, task.n_train
    params = list(model.parameters())
    total = sum(s.steps for s in stages)
    rows: list[dict[str, Any]] = []
    elapsed = 0.0
    start_step = 0

    ck_w = ck_j = None
    if checkpoint is not None:
        ck_w, ck_j = Path(f"{checkpoint}.safetensors"), Path(f"{checkpoint}.json")
    resumed: dict[str, torch.Tensor] | None = None
    if resume and ck_w is not None and ck_w.exists():
        # the resume state lives in the weights file's header: one atomic file, so a crash
        # can never pair weights of one step with the history of another
        from safetensors import safe_open

        with safe_open(str(ck_w), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("bnstruct_checkpoint", "null") or "null")
        if meta is None:
            raise ConfigError(f"checkpoint {ck_w} has no bnstruct resume state: delete it to "
                              "start over")
        if meta.get("stages") != [asdict(s) for s in stages]:
            raise ConfigError(f"checkpoint {ck_w} was written for other stages; "
                              "resume with the same configuration")
        resumed = load_file(str(ck_w), device=str(p0.device))
        model.load_state_dict({k[6:]: v for k, v in resumed.items() if k.startswith("model.")})
        start_step, rows, elapsed = meta["step"], meta["history"], meta["seconds"]

    def save_checkpoint(step: int, opt: torch.optim.Optimizer | None) -> None:
        assert ck_w is not None and ck_j is not None
        meta = json.dumps({"step": step, "history": rows,
                           "seconds": elapsed + time.perf_counter() - t0,
                           "stages": [asdict(s) for s in stages]})
        save_tensors(ck_w, _state_tensors(model, opt), metadata={"bnstruct_checkpoint": meta})
        atomic_write_text(ck_j, meta)  # a readable copy; resume reads the header above

    def log(step: int, si: int, stage: Stage) -> dict[str, Any]:
        row = {"step": step, "stage": si, "lr": stage.lr, "lam": stage.lam,
               **evaluate(model, task, stage.lam),
               "seconds": elapsed + time.perf_counter() - t0}
        rows.append(row)
        if callback is not None:
            callback(step, row)
        return row

    show = sys.stderr.isatty() if progress is None else progress
    status, diverged_at = "completed", None
    t0 = time.perf_counter()
    step = start_step
    opt: torch.optim.Optimizer | None = None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                   disable=not show, transient=True)
    try:
        with bar:
            bar_id = bar.add_task("train", total=total, completed=start_step, info="")
            offset = 0
            for si, stage in enumerate(stages):
                if step >= offset + stage.steps:
                    offset += stage.steps
                    continue
                opt = _make_optimizer(stage, params)
                if resumed is not None:
                    _load_opt_state(opt, resumed)
                    resumed = None
                if not rows:
                    log(0, si, stage)
                bs = stage.batch_size
                while step < offset + stage.steps:
                    if bs is None or bs >= N:
                        xb, yb, nb = X, Y, N
                    else:
                        idx = _batch(seed, si, step - offset, bs, N).to(X.device)
                        xb, yb, nb = X[idx], Y[idx], bs
                    opt.zero_grad(set_to_none=True)
                    loss = torch.nn.functional.mse_loss(model(xb), yb, reduction="sum") / nb
                    if not math.isfinite(loss.item()):
                        status, diverged_at = "diverged", step
                        if not rows or rows[-1]["step"] != step:
                            log(step, si, stage)  # the final metrics are the diverged ones
                        break
                    loss.backward()
                    opt.step()
                    step += 1
                    if step % log_every == 0 or step == offset + stage.steps:
                        row = log(step, si, stage)
                        if not all(math.isfinite(row[c]) for c in ("objective", "param_norm2")):
                            status, diverged_at = "diverged", step
                            break
                        bar.update(bar_id, completed=step,
                                   info=f"rel_fit {row['rel_fit']:.2e}  "
                                        f"|θ|² {row['param_norm2']:.1f}")
                    if checkpoint_every and step % checkpoint_every == 0:
                        save_checkpoint(step, opt)
                if status == "diverged":
                    break
                offset += stage.steps
                # A checkpoint at every stage boundary keeps resume exact across stages.
                if ck_w is not None and checkpoint_every:
                    save_checkpoint(step, None)
    except KeyboardInterrupt:
        status = "interrupted"
        if ck_w is not None:
            save_checkpoint(step, opt)
    seconds = elapsed + time.perf_counter() - t0
    hist = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    final = {k: float(v) for k, v in rows[-1].items() if k not in ("step", "stage")} if rows else {}
    return TrainResult(status, step, hist, seconds, diverged_at, final)
