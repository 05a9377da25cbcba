r"""Input Jacobians and their top-k pseudo-determinants."""

from __future__ import annotations

from collections import deque

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ._chain import backward_factors, check_X, forward, parse_chain
from .reference import jacobian_reference

__all__ = ["jacobian", "log_pdet", "generic_d_in"]


def generic_d_in(model: nn.Module) -> int | None:
    """``in_features`` of the first ``nn.Linear`` of a generic model (for error messages)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    return None


@torch.no_grad()
def jacobian(model: nn.Module, X: torch.Tensor, *, dtype: torch.dtype | None = torch.float64
             ) -> torch.Tensor:
    r"""Input Jacobian :math:`Jf(x_i) = \partial f(x_i) / \partial x`, shape ``[N, d_out, d_in]``.

    For chains (:class:`bnstruct.MLP`, :class:`bnstruct.DeepLinear`, ``nn.Sequential`` of
    Linear/ReLU/LeakyReLU/Identity) it is :math:`G_1 W_1` with the backward recursion
    ``G_L = D_L``, ``G_{l-1} = G_l W_l D_{l-1}`` (cost O(N d_out sum n_l n_{l-1})); any other
    model falls back to ``torch.func.vmap(jacrev)``. Computed in ``dtype`` (float64 default;
    ``None`` keeps the model's dtype). At ReLU kinks the derivative is autograd's (0).
    """
    from ._chain import is_chain

    if not is_chain(model):
        X = check_X(X, generic_d_in(model), dtype or next(model.parameters()).dtype)
        return jacobian_reference(model, X, dtype)
    chain = parse_chain(model, dtype)
    X = check_X(X, chain.d_in, chain.dtype, chain.weights[0].device)
    fw = forward(chain, X)
    (_, G1), = deque(backward_factors(chain, fw), maxlen=1)  # run the recursion to G_1
    return G1 @ chain.weights[0]


def log_pdet(J: torch.Tensor, k: int, *, rtol: float | None = None) -> torch.Tensor:
    r"""Log of the top-k pseudo-determinant, :math:`\log|J|_k = \sum_{i \le k} \log s_i(J)`.

    ``J``: ``[..., m, n]`` -> ``[...]``. ``-inf`` where ``rank J < k`` numerically, i.e. where
    :math:`s_k \le \mathrm{rtol}\, s_1` with default ``rtol = max(m, n) * eps(J.dtype)``
    (numpy's ``matrix_rank`` rule). ``k = 0`` gives 0; ``k > min(m, n)`` is an error.
    """
    if not torch.is_tensor(J) or J.dim() < 2:
        raise DataError("J must be a tensor of shape [..., m, n]")
    m, n = J.shape[-2:]
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ConfigError(f"k must be a non-negative integer, got {k!r}")
    if k > min(m, n):
        raise ConfigError(f"k = {k} exceeds min(m, n) = {min(m, n)} of the {m} x {n} Jacobian")
    if not torch.isfinite(J).all():
        raise DataError("J has non-finite values (NaN/inf)")
    if k == 0:
        return torch.zeros(J.shape[:-2], dtype=J.dtype, device=J.device)
    s = torch.linalg.svdvals(J)
    tol = (max(m, n) * torch.finfo(J.dtype).eps) if rtol is None else rtol
    top = s[..., :k]
    out = top.clamp_min(torch.finfo(J.dtype).tiny).log().sum(-1)
    deficient = top[..., -1] <= tol * s[..., 0]
    return torch.where(deficient, torch.full_like(out, -float("inf")), out)
