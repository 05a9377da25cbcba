r"""Sharpness: the top Hessian eigenvalue of the regularized objective."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import grad, jvp

from ..errors import ConfigError, DataError
from ._chain import check_X, is_chain, parse_chain
from ._jacobian import generic_d_in
from ._lanczos import DENSE_MAX, dense_top_eig, top_eig
from .reference import objective_fn, quiet_jvp_import

__all__ = ["hessian_max_eig"]


def hessian_max_eig(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, lam: float, *,
                    method: str = "auto", tol: float = 1e-10, seed: int = 0,
                    dtype: torch.dtype | None = torch.float64) -> float:
    r"""Largest algebraic eigenvalue of the Hessian (in all parameters, biases included) of

    .. math::

        \mathcal L(\theta) = \frac1N \sum_{i=1}^N \|f_\theta(x_i) - y_i\|^2
        + \lambda \|\theta\|^2

    (full batch; ``lam`` multiplies :math:`\|\theta\|^2`, i.e. PyTorch's
    ``weight_decay = 2 lam``). Gradient descent with step ``lr`` is stable only if this is
    ``<= 2 / lr``. Hessian-vector products are ``torch.func.jvp`` of ``torch.func.grad``;
    ``method="lanczos"`` runs ARPACK on them, ``"dense"`` forms the ``P x P`` matrix from
    ``P`` HVPs, ``"auto"`` is dense for ``P <= 64``. Computed in ``dtype`` (float64 default).
    ``X``: ``[N, d_in]``, ``Y``: ``[N, d_out]``.
    """
    if method not in ("auto", "lanczos", "dense"):
        raise ConfigError(f"unknown method {method!r}: choose auto, lanczos or dense")
    if not isinstance(lam, int | float) or isinstance(lam, bool) or not lam >= 0:
        raise ConfigError(f"lam must be a number >= 0, got {lam!r}")
    dt = dtype or next(model.parameters()).dtype
    d_in = parse_chain(model, dt).d_in if is_chain(model) else generic_d_in(model)
    X = check_X(X, d_in, dt)
    Y = check_X(Y, None, dt, name="Y")
    with torch.no_grad():
        d_out = model(X[:1].to(next(model.parameters()).dtype)).shape[1]
    if Y.shape != (X.shape[0], d_out):
        raise DataError(f"Y must have shape [N, d_out] = [{X.shape[0]}, {d_out}], got "
                        f"{tuple(Y.shape)}")
    fn, theta0 = objective_fn(model, X, Y, float(lam), dtype)
    quiet_jvp_import()
    g = grad(fn)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return jvp(g, (theta0,), (v,))[1]

    n = theta0.numel()
    if method == "dense" or (method == "auto" and n <= DENSE_MAX):
        return dense_top_eig(hvp, n, dtype=theta0.dtype, device=theta0.device)
    return top_eig(hvp, n, dtype=theta0.dtype, device=theta0.device, tol=tol, seed=seed)
