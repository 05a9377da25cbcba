r"""Stages of a run, the default recipe, the stage's optimizer and its minibatch order.

The objective (docs/theory.md#objects), biases included:

.. math::

    \mathcal L(\theta) = \frac1N \sum_{i=1}^N \|f_\theta(x_i) - y_i\|^2 + \lambda \|\theta\|^2 .

The penalty's gradient :math:`2\lambda\theta` is applied through the optimizer's coupled weight
decay, i.e. PyTorch's ``weight_decay = 2 * lam`` for ``torch.optim.SGD`` / ``torch.optim.Adam``
(*not* AdamW's decoupled decay).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch

from .._checks import integer, number
from ..errors import ConfigError

__all__ = ["Stage", "parse_stage", "default_recipe", "adam_lr", "make_optimizer", "minibatch",
           "OPTIMIZERS", "BASE_LR", "BASE_WIDTH"]

OPTIMIZERS = ("gd", "adam")


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
        number("lr", self.lr, positive=True)
        number("lam", self.lam, nonneg=True)
        integer("steps", self.steps, low=1)
        if self.batch_size is not None:
            integer("batch_size", self.batch_size, low=1)

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
    return Stage(parts[0], lr, lam, steps, bs)  # type: ignore[arg-type]


#: the default recipe's Adam learning rate, and the hidden width it was tuned at
BASE_LR, BASE_WIDTH = 1.5e-3, 64


def adam_lr(width: int, base: float = BASE_LR) -> float:
    r"""The default recipe's Adam learning rate at hidden ``width``:
    :math:`\text{base} \sqrt{64 / w}` (``base`` exactly at width 64).

    Why: Adam moves every weight by about ``lr`` per step whatever the size of its gradient.
    When the penalty is switched on after the fit, the update is dominated by
    :math:`2\lambda\theta`, so every weight shrinks by ``lr`` per step, a relative change
    :math:`\text{lr} / |w_{ij}| \approx \text{lr} \sqrt{w / 2}` at He scale: the same
    ``lr`` shrinks a width-200 layer 1.8 times faster than a width-64 one, and deep wide nets
    collapsed to rank 1 (measured: width 200, depth 25, lam 0.005, lr 1.5e-3 collapsed, lr
    8.5e-4 kept rank 2 with 84% of the layers on the structure; docs/theory.md#regime-map).
    This rule keeps that relative step the same at every width."""
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ConfigError(f"width must be an integer >= 1, got {width!r}")
    return base if width == BASE_WIDTH else base * math.sqrt(BASE_WIDTH / width)


def default_recipe(lam: float = 0.005, steps: int = 6000, lr: float = 1.5e-3) -> tuple[Stage, ...]:
    r"""Adam in three full-batch stages with a penalty warm-up (docs/theory.md#setups):

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


def make_optimizer(stage: Stage, params: Iterable[torch.Tensor], *, lr: float | None = None,
                   weight_decay: float | None = None) -> torch.optim.Optimizer:
    """The stage's PyTorch optimizer (``adam``: ``torch.optim.Adam``, ``gd``: plain
    ``torch.optim.SGD``) with the penalty as coupled weight decay ``2 * lam``.

    ``lr`` / ``weight_decay`` override the stage's values (the batched trainer runs the
    optimizer at ``lr=1`` and scales each network's update by its own learning rate). Fused
    kernels (one multi-tensor update per step) where PyTorch has them for this device/dtype,
    else the foreach implementation: same update rule, fewer kernel launches."""
    wd = 2.0 * stage.lam if weight_decay is None else weight_decay
    lr = stage.lr if lr is None else lr
    cls = torch.optim.Adam if stage.optimizer == "adam" else torch.optim.SGD
    params = list(params)
    try:
        return cls(params, lr=lr, weight_decay=wd, fused=True)
    except (RuntimeError, TypeError):
        return cls(params, lr=lr, weight_decay=wd, foreach=True)


def minibatch(seed: int, stage: int, local_step: int, bs: int, n: int) -> torch.Tensor:
    """Indices (CPU, int64) of minibatch ``local_step`` of stage ``stage``: epochs of
    ``n // bs`` batches, each epoch a permutation seeded by ``(seed, stage, epoch)``.

    Stateless, so a resumed run draws the same batches, and a network trained in a batch of
    networks draws the same batches as alone."""
    per_epoch = n // bs
    epoch, j = divmod(local_step, per_epoch)
    g = torch.Generator(device="cpu").manual_seed((int(seed) * 1_000_003 + stage) * 1_000_003
                                                  + epoch)
    return torch.randperm(n, generator=g)[j * bs:(j + 1) * bs]
