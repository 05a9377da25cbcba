r"""Singular values of the weights and effective ranks of any spectrum."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError
from ._chain import parse_chain

__all__ = ["weight_spectra", "effective_rank", "numerical_rank", "EFFECTIVE_RANK_METHODS",
           "THRESHOLD_RTOL"]

EFFECTIVE_RANK_METHODS = ("entropy", "participation", "threshold")
#: default relative cut of ``method="threshold"``: count ``s_i > 0.1 s_1``
#: (directions carrying more than 1% of the top direction's energy).
THRESHOLD_RTOL = 0.1


def weight_spectra(model: nn.Module, *, dtype: torch.dtype | None = torch.float64
                   ) -> list[torch.Tensor]:
    r"""Singular values of every weight matrix, in layer order.

    Returns a list of ``L`` tensors; entry ``l-1`` holds :math:`s_1(W_\ell) \ge \dots \ge
    s_r(W_\ell)`, ``r = min(n_l, n_{l-1})``, computed in ``dtype`` (float64 by default).
    Biases are not included. Accepts the models of :func:`bnstruct.representations`.
    """
    chain = parse_chain(model, dtype)
    return [torch.linalg.svdvals(W) for W in chain.weights]


def _as_spectrum(S: Any) -> torch.Tensor:
    s = S.detach() if torch.is_tensor(S) else torch.as_tensor(np.asarray(S))
    s = s.to(torch.float64).reshape(-1) if s.dim() <= 1 else None
    if s is None:
        raise DataError(f"a spectrum must be 1-d, got shape {tuple(torch.as_tensor(S).shape)}")
    if not torch.isfinite(s).all():
        raise DataError("the spectrum has non-finite values (NaN/inf)")
    if (s < 0).any():
        raise DataError(f"singular values must be >= 0, got min {float(s.min()):g}")
    return s


def effective_rank(S: Any, method: str = "entropy", rtol: float = THRESHOLD_RTOL) -> float:
    r"""Effective rank of a spectrum of singular values ``S`` (1-d, >= 0, any order).

    Methods (all equal ``r`` for ``r`` equal nonzero singular values, and 0 for ``S = 0``):

    - ``"entropy"`` (Roy and Vetterli 2007): :math:`\exp H(p)`, :math:`p_i = s_i / \sum_j s_j`,
      :math:`H(p) = -\sum_i p_i \log p_i`.
    - ``"participation"``: participation ratio of the eigenvalues :math:`\lambda_i = s_i^2`
      of the Gram matrix, :math:`(\sum_i s_i^2)^2 / \sum_i s_i^4`.
    - ``"threshold"``: :math:`\#\{i : s_i > \mathrm{rtol} \cdot s_1\}` (``rtol`` is relative
      to the largest value; only this method uses it).

    For representations, ``S`` are the singular values of the *centered* representation
    matrix (see :func:`bnstruct.analyze`).
    """
    if method not in EFFECTIVE_RANK_METHODS:
        raise ConfigError(f"unknown effective-rank method {method!r}: choose one of "
                          f"{', '.join(EFFECTIVE_RANK_METHODS)}")
    if not (isinstance(rtol, int | float) and 0 <= rtol < 1):
        raise ConfigError(f"rtol must be a number in [0, 1), got {rtol!r}")
    s = _as_spectrum(S)
    if s.numel() == 0 or float(s.max()) == 0.0:
        return 0.0
    if method == "threshold":
        return float((s > rtol * s.max()).sum())
    if method == "participation":
        s2 = s.pow(2) / s.max().pow(2)  # scale-free, no overflow
        return float(s2.sum().pow(2) / s2.pow(2).sum())
    p = s / s.sum()
    p = p[p > 0]
    return float(math.exp(float(-(p * p.log()).sum())))


def numerical_rank(S: Any, shape: tuple[int, int], eps: float) -> int:
    r"""Numerical rank as in ``numpy.linalg.matrix_rank``: :math:`\#\{s_i > s_1 \max(m, n)
    \epsilon\}` for an ``m x n`` matrix and machine epsilon ``eps`` of the data's dtype."""
    s = _as_spectrum(S)
    if s.numel() == 0 or float(s.max()) == 0.0:
        return 0
    return int((s > s.max() * max(shape) * eps).sum())
