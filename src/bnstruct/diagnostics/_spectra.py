r"""Singular values of the weights (effective ranks live in :mod:`bnstruct.conventions`)."""

from __future__ import annotations

import torch
from torch import nn

from ..conventions import THRESHOLD_RTOL, effective_rank, numerical_rank
from ..errors import ConfigError
from ._chain import parse_chain
from ._general import unwrap, weight_layers, weight_matrix

__all__ = ["weight_spectra", "effective_rank", "numerical_rank", "EFFECTIVE_RANK_METHODS",
           "THRESHOLD_RTOL"]

EFFECTIVE_RANK_METHODS = ("entropy", "participation", "threshold")


def weight_spectra(model: nn.Module, *, dtype: torch.dtype | None = torch.float64
                   ) -> list[torch.Tensor]:
    r"""Singular values of every weight matrix, in layer order.

    Returns a list of ``L`` tensors; entry ``l-1`` holds :math:`s_1(W_\ell) \ge \dots \ge
    s_r(W_\ell)`, ``r = min(n_l, n_{l-1})``, computed in ``dtype`` (float64 by default).
    Biases are not included. Chains (:func:`bnstruct.representations`): their Linear layers;
    any other model: every ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` in
    ``named_modules()`` order, a kernel ``[out, in/groups, *k]`` read as the
    ``out x (in/groups * prod k)`` matrix.
    """
    try:
        mats = parse_chain(model, dtype).weights
    except ConfigError:
        model = unwrap(model)
        mats = [weight_matrix(m, dtype) for _, m in weight_layers(model)]
        if not mats:
            raise ConfigError(f"{type(model).__name__} has no nn.Linear, nn.Conv1d or "
                              "nn.Conv2d layer") from None
    return [torch.linalg.svdvals(W) for W in mats]
