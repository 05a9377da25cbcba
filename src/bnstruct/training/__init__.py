r"""L2-regularized training in stages: one step, a stage runner, a saved state, observers.

- :mod:`._stages`: :class:`Stage`, :func:`default_recipe`, the stage's optimizer and its
  stateless minibatch order;
- :mod:`._step`: :func:`step` (the one training step, timed by ``bnstruct bench train``) and
  :func:`evaluate` (the history row's metrics);
- :mod:`._state`: :class:`TrainState` (weights, optimizer state, step and history in one
  safetensors file);
- :mod:`._runner`: :class:`StageRunner` (yields history rows) and :func:`train`;
- :mod:`._progress`: observers of the rows (progress bar, callback);
- :mod:`._batched`: :func:`train_batched`, many networks of one shape in one batched step.

Objective (docs/theory.md#objects), biases included:

.. math::

    \mathcal L(\theta) = \frac1N \sum_{i=1}^N \|f_\theta(x_i) - y_i\|^2 + \lambda \|\theta\|^2 ,

the penalty as the optimizer's coupled weight decay ``2 * lam``.
"""

from ._batched import Coeffs, StackedNet, batched_step, same_structure, stage_coeffs, train_batched
from ._progress import CallbackObserver, Observer, ProgressBar
from ._runner import (
    HISTORY_COLUMNS,
    Presses,
    StageRunner,
    TrainResult,
    active_presses,
    deferred_sigint,
    train,
)
from ._stages import OPTIMIZERS, Stage, default_recipe, make_optimizer, minibatch, parse_stage
from ._state import TrainState
from ._step import evaluate, first_nonfinite, step

__all__ = [
    "Stage", "default_recipe", "parse_stage", "OPTIMIZERS", "make_optimizer", "minibatch",
    "train", "TrainResult", "HISTORY_COLUMNS", "StageRunner", "TrainState",
    "step", "evaluate", "first_nonfinite",
    "Observer", "ProgressBar", "CallbackObserver", "deferred_sigint", "Presses",
    "active_presses",
    "train_batched", "StackedNet", "batched_step", "same_structure", "Coeffs", "stage_coeffs",
]
