r"""L2-regularized training in stages: one loop for every run, alone or in a batch.

- :mod:`._stages`: :class:`Stage`, :func:`default_recipe`, the stage's optimizer and its
  stateless minibatch order;
- :mod:`._stacked`: :class:`StackedNet`, the kernel of ``B`` feed-forward networks of one
  shape (one batched matmul per layer, a hand-written backward);
- :mod:`._batch`: the :class:`Batch` interface the loop trains, :class:`StackedBatch`
  (bnstruct networks, ``B >= 1``: a single network is a batch of one) and
  :class:`ModuleBatch` (any other module, through autograd);
- :mod:`._loop`: :func:`run_stages`, the one stage loop (stages, logging, divergence,
  checkpoints, stopping);
- :mod:`._runner`: :func:`train`, :func:`train_batched` and :func:`train_members`;
- :mod:`._stop`: :class:`StopToken`, the one stop signal, and the Ctrl-C handling;
- :mod:`._state`: :class:`TrainState` (weights, optimizer state, step and history in one
  safetensors file);
- :mod:`._progress`: observers of the rows (progress bar, callback).

Objective (docs/theory.md#objects), biases included:

.. math::

    \mathcal L(\theta) = \frac1N \sum_{i=1}^N \|f_\theta(x_i) - y_i\|^2 + \lambda \|\theta\|^2 ,

the penalty's gradient :math:`2\lambda\theta` added as coupled weight decay ``2 * lam``.
"""

from ._batch import Batch, ModuleBatch, StackedBatch, make_batch, same_structure
from ._loop import Interrupted, run_stages
from ._progress import CallbackObserver, Observer, ProgressBar
from ._runner import HISTORY_COLUMNS, TrainResult, train, train_batched, train_members
from ._stacked import PAD, StackedNet
from ._stages import (
    BASE_LR,
    BASE_WIDTH,
    OPTIMIZERS,
    Stage,
    adam_lr,
    default_recipe,
    make_optimizer,
    minibatch,
    parse_stage,
)
from ._state import TrainState, checkpoint_step
from ._step import evaluate, step
from ._stop import StopToken, active_token, deferred_sigint, hold_sigint

__all__ = [
    "Stage", "default_recipe", "adam_lr", "BASE_LR", "BASE_WIDTH", "parse_stage", "OPTIMIZERS",
    "make_optimizer", "minibatch",
    "train", "train_batched", "train_members", "TrainResult", "HISTORY_COLUMNS",
    "TrainState", "checkpoint_step", "run_stages", "Interrupted",
    "Batch", "StackedBatch", "ModuleBatch", "make_batch", "same_structure",
    "StackedNet", "PAD", "step", "evaluate",
    "Observer", "ProgressBar", "CallbackObserver",
    "StopToken", "deferred_sigint", "hold_sigint", "active_token",
]
