r"""The bottleneck inequality of docs/theory.md#bottleneck-inequality, point by point."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from ..models._algebra import linear_chain
from ._evaluation import BOUND_COLUMNS, Evaluation

__all__ = ["bottleneck_bound", "BOUND_COLUMNS"]


def bottleneck_bound(model: nn.Module, X: torch.Tensor, k: int, *,
                     dtype: torch.dtype | None = torch.float64) -> pd.DataFrame:
    r"""Both sides of the bottleneck inequality at every point of ``X`` (``[N, d_in]``).

    .. math::

        \underbrace{\sum_\ell \sum_{i>k} s_i(W_\ell)^2}_{\texttt{tail}}
        + \underbrace{\sum_\ell \sum_{i\le k} \big(s_i(W_\ell)^2 - 1 - \log s_i(W_\ell)^2
        \big)}_{\texttt{head}}
        \;\le\; \underbrace{\|\theta\|^2 - kL}_{\texttt{c1}}
        - \underbrace{2 \log |Jf(x)|_k}_{\texttt{log\_pdet2}}

    ``lhs = tail + head`` (the same for every point), ``rhs = c1 - log_pdet2``,
    ``slack = rhs - lhs`` (a theorem: negative slack is a bug). :math:`\|\theta\|^2` includes
    biases. Returns a DataFrame with one row per point and columns :data:`BOUND_COLUMNS`.
    Where ``rank Jf(x) < k`` the right side is ``+inf``; if some layer has rank ``< k`` both
    sides are ``+inf`` and the slack is NaN. Requires a chain, ``0 <= k <= min(sizes)`` and
    activations with ``|sigma'| <= 1`` (ReLU, LeakyReLU with ``|slope| <= 1``, linear).
    Computed in ``dtype`` (float64 default).
    """
    linear_chain(model)  # a chain, or the error naming what breaks it
    return Evaluation(model, X, dtype=dtype).bound(k)
