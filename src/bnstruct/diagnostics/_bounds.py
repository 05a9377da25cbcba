r"""The bottleneck inequality of THEORY section 3, point by point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError
from ._chain import Chain, check_X, parse_chain
from ._jacobian import jacobian, log_pdet

__all__ = ["bottleneck_bound", "check_k", "BOUND_COLUMNS"]

BOUND_COLUMNS = ["point", "k", "lhs", "rhs", "slack", "tail", "head", "c1", "log_pdet2",
                 "param_norm2"]


def check_k(k: object, chain: Chain) -> int:
    """``k`` must be an integer with ``0 <= k <= min(sizes)`` (the narrowest layer)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ConfigError(f"k must be a non-negative integer, got {k!r}")
    sizes = chain.sizes
    narrow = min(range(len(sizes)), key=lambda i: sizes[i])
    if k > sizes[narrow]:
        where = ("the input" if narrow == 0 else "the output" if narrow == len(sizes) - 1
                 else f"hidden layer {narrow}")
        raise ConfigError(f"k = {k} is larger than the narrowest layer ({where} has width "
                          f"{sizes[narrow]}; sizes {sizes})")
    return k


def _weight_terms(chain: Chain, k: int) -> tuple[float, float]:
    tail = head = 0.0
    for W in chain.weights:
        s = torch.linalg.svdvals(W)
        tail += float(s[k:].pow(2).sum())
        top = s[:k]
        head += float((top.pow(2) - 1 - 2 * top.log()).sum())
    return tail, head


@torch.no_grad()
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
    sides are ``+inf`` and the slack is NaN. Requires ``0 <= k <= min(sizes)`` and activations
    with ``|sigma'| <= 1`` (ReLU, LeakyReLU with ``|slope| <= 1``, linear).
    """
    chain = parse_chain(model, dtype)
    k = check_k(k, chain)
    if chain.max_slope > 1:
        raise ConfigError(f"the bound needs |activation slope| <= 1; this model has a slope "
                          f"{chain.max_slope:g}")
    X = check_X(X, chain.d_in, chain.dtype, chain.weights[0].device)
    J = jacobian(model, X, dtype=dtype)
    lp2 = 2 * log_pdet(J, k)
    norm2 = sum(float(W.pow(2).sum()) for W in chain.weights) + sum(
        float(b.pow(2).sum()) for b in chain.biases if b is not None)
    c1 = norm2 - k * chain.depth
    tail, head = _weight_terms(chain, k)
    lhs = tail + head
    rhs = (c1 - lp2).cpu().numpy()
    with np.errstate(invalid="ignore"):
        slack = rhs - lhs
    N = X.shape[0]
    return pd.DataFrame({
        "point": range(N), "k": k, "lhs": lhs, "rhs": rhs, "slack": slack, "tail": tail,
        "head": head, "c1": c1, "log_pdet2": lp2.cpu().numpy(), "param_norm2": norm2,
    }, columns=BOUND_COLUMNS)
