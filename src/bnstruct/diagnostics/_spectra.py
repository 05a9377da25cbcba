r"""Singular values of the weights (effective ranks live in :mod:`bnstruct.conventions`)."""

from __future__ import annotations

import torch
from torch import nn

from ..conventions import THRESHOLD_RTOL, effective_rank, numerical_rank
from ._chain import parse_chain

__all__ = ["weight_spectra", "effective_rank", "numerical_rank", "EFFECTIVE_RANK_METHODS",
           "THRESHOLD_RTOL"]

EFFECTIVE_RANK_METHODS = ("entropy", "participation", "threshold")


def weight_spectra(model: nn.Module, *, dtype: torch.dtype | None = torch.float64
                   ) -> list[torch.Tensor]:
    r"""Singular values of every weight matrix, in layer order.

    Returns a list of ``L`` tensors; entry ``l-1`` holds :math:`s_1(W_\ell) \ge \dots \ge
    s_r(W_\ell)`, ``r = min(n_l, n_{l-1})``, computed in ``dtype`` (float64 by default).
    Biases are not included. Accepts the chains of :func:`bnstruct.representations`.
    """
    chain = parse_chain(model, dtype)
    return [torch.linalg.svdvals(W) for W in chain.weights]
