r"""Sharpness: the top Hessian eigenvalue of the regularized objective."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ._evaluation import Evaluation

__all__ = ["hessian_max_eig"]


def hessian_max_eig(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, lam: float, *,
                    method: str = "auto", tol: float = 1e-10, seed: int = 0,
                    dtype: torch.dtype | None = torch.float64,
                    output: int | str | Callable[[Any], torch.Tensor] | None = None) -> float:
    r"""Largest algebraic eigenvalue of the Hessian (in all parameters, biases included) of

    .. math::

        \mathcal L(\theta) = \frac1N \sum_{i=1}^N \|f_\theta(x_i) - y_i\|^2
        + \lambda \|\theta\|^2

    (full batch; ``lam`` multiplies :math:`\|\theta\|^2`, i.e. PyTorch's
    ``weight_decay = 2 lam``). Gradient descent with step ``lr`` is stable only if this is
    ``<= 2 / lr``. Hessian-vector products (the model in eval mode) are chosen per device by
    measurement (:data:`bnstruct.diagnostics.HVP_METHODS`: reverse-over-reverse,
    ``torch.func.vjp`` of ``torch.func.grad``, on the CPU; forward-over-reverse, ``jvp`` of
    ``grad``, elsewhere; ``analyze`` names it in ``summary["hvp_method"]``);
    ``method="lanczos"`` runs Lanczos on them, ``"dense"`` forms the
    ``P x P`` matrix from ``P`` HVPs, ``"auto"`` is dense for ``P <= 64``. Computed in
    ``dtype`` (float64 default). ``X``: ``[N, d_in]``, ``Y``: ``[N, d_out]``.
    """
    if method not in ("auto", "lanczos", "dense"):
        raise ConfigError(f"unknown method {method!r}: choose auto, lanczos or dense")
    if not isinstance(lam, int | float) or isinstance(lam, bool) or not lam >= 0:
        raise ConfigError(f"lam must be a number >= 0, got {lam!r}")
    return Evaluation(model, X, dtype=dtype, output=output).hessian_max_eig(Y, lam, method,
                                                                             tol, seed)
