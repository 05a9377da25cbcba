r"""Input Jacobians and their top-k pseudo-determinants."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ._evaluation import Evaluation, log_pdet_from_svals

__all__ = ["jacobian", "log_pdet"]


def jacobian(model: nn.Module, X: torch.Tensor, *, dtype: torch.dtype | None = torch.float64,
             implementation: str = "auto") -> torch.Tensor:
    r"""Input Jacobian :math:`Jf(x_i) = \partial f(x_i) / \partial x`, shape ``[N, d_out, d_in]``.

    ``implementation="structured"`` (chains: :class:`bnstruct.MLP`, :class:`bnstruct.DeepLinear`,
    nested ``nn.Sequential`` of Linear/ReLU/LeakyReLU/Identity/Dropout): :math:`G_1 W_1` with
    the backward recursion ``G_L = D_L``, ``G_{l-1} = G_l W_l D_{l-1}`` (cost
    O(N d_out sum n_l n_{l-1})); ``"autodiff"``: ``torch.func.vmap(jacrev)`` on the model in
    eval mode; ``"auto"`` (default): structured for chains, autodiff otherwise. Computed in
    ``dtype`` (float64 default; ``None`` keeps the model's dtype). At ReLU kinks the
    derivative is autograd's (0).
    """
    return Evaluation(model, X, dtype=dtype, implementation=implementation).jacobian


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
    return log_pdet_from_svals(torch.linalg.svdvals(J), k, (m, n), rtol)
