r"""The training step (the one :func:`bnstruct.train` runs and ``bnstruct bench train`` times)
and the full-batch evaluation logged in the history.

``fit`` is the mean over points of the squared error summed over output coordinates
(``mse_loss(reduction="sum") / N``), not PyTorch's default mean over all entries; the penalty
:math:`\lambda\|\theta\|^2` is in the optimizer (coupled weight decay ``2 lam``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..models import param_norm2
from ..tasks import Task

__all__ = ["step", "evaluate"]


def step(model: nn.Module, opt: torch.optim.Optimizer, X: torch.Tensor, Y: torch.Tensor,
         losses: torch.Tensor, i: int) -> None:
    """One optimizer step on the batch ``X [n, d_in]``, ``Y [n, d_out]``.

    The batch's data term ``sum_i ||f(x_i) - y_i||^2 / n`` is written to ``losses[i]`` on the
    device (no host sync: divergence is read from ``losses`` at the next check, see
    :mod:`bnstruct.training._loop`); its gradient plus the optimizer's coupled weight decay is the
    gradient of the stage's objective."""
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(model(X), Y, reduction="sum") / X.shape[0]
    losses[i] = loss.detach()
    loss.backward()
    opt.step()


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, lam: float) -> dict[str, float]:
    """Full-batch objective terms and test error of ``model`` on ``task`` (one host sync)."""
    n2 = param_norm2(model)
    fit = (model(task.X) - task.Y).pow(2).sum(1).mean()
    test = (model(task.X_test) - task.Y_test).pow(2).sum(1).mean()
    y2 = task.Y.pow(2).sum(1).mean()
    y2t = task.Y_test.pow(2).sum(1).mean()
    n2_, fit_, test_, y2_, y2t_ = torch.stack([n2, fit, test, y2, y2t]).tolist()
    return {"objective": fit_ + lam * n2_, "fit": fit_, "penalty": lam * n2_,
            "param_norm2": n2_, "rel_fit": fit_ / y2_, "test_error": test_,
            "rel_test_error": test_ / y2t_}
