r"""Brute-force ``torch.func`` references: the ground truth of the tests (float64 on tiny nets)
and the baselines of :mod:`bnstruct.bench`. Production code never imports this module (a test
checks it); its own ``torch.func`` path is :mod:`bnstruct.diagnostics._autodiff`, written
independently, so a test comparing the two compares two implementations.

They differentiate ``model`` through :func:`torch.func.functional_call` with its parameters
cast to ``dtype``, so they work for any module whose forward maps ``[N, d_in] -> [N, d_out]``
point by point. Memory is O(N d_out #params): only for small models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ..errors import ConfigError
from ._autodiff import quiet_jvp_import  # a warning filter only; the math here stays separate

__all__ = ["quiet_jvp_import", "func_params", "jacobian_reference", "param_jacobian",
           "ntk_reference", "ntk_matvec_reference", "objective_fn", "hessian_dense"]



def func_params(model: nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """``{name: detached parameter cast to dtype}`` (the point where derivatives are taken)."""
    params = {k: (v.detach() if dtype is None else v.detach().to(dtype))
              for k, v in model.named_parameters()}
    if not params:
        raise ConfigError(f"{type(model).__name__} has no parameters")
    return params


def _single(model: nn.Module) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    def f(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, params, (x[None],))[0]
    return f


def jacobian_reference(model: nn.Module, X: torch.Tensor, dtype: torch.dtype | None
                       ) -> torch.Tensor:
    """Input Jacobian ``[N, d_out, d_in]`` by ``vmap(jacrev)``."""
    params = func_params(model, dtype)
    f = _single(model)
    return vmap(jacrev(f, argnums=1), (None, 0))(params, X)


def param_jacobian(model: nn.Module, X: torch.Tensor, dtype: torch.dtype | None
                   ) -> torch.Tensor:
    """Per-sample parameter Jacobian flattened to ``[N, d_out, P]`` (the PyTorch NTK-tutorial
    way: ``vmap(jacrev)`` over samples)."""
    params = func_params(model, dtype)
    jac = vmap(jacrev(_single(model)), (None, 0))(params, X)
    N = X.shape[0]
    return torch.cat([j.reshape(N, j.shape[1], -1) for j in jac.values()], dim=2)


def ntk_reference(model: nn.Module, X: torch.Tensor, X2: torch.Tensor | None = None,
                  mode: str = "full", dtype: torch.dtype | None = torch.float64
                  ) -> torch.Tensor:
    r"""Empirical NTK by Jacobian contraction, :math:`\Theta(x, x') = J_\theta f(x)
    J_\theta f(x')^T`: ``full`` ``[N, N2, d_out, d_out]``, ``trace`` ``[N]``, ``diag``
    ``[N, d_out, d_out]``."""
    params = func_params(model, dtype)
    f = _single(model)
    j1 = vmap(jacrev(f), (None, 0))(params, X)
    if mode == "trace":
        return torch.stack([j.pow(2).flatten(1).sum(1) for j in j1.values()]).sum(0)
    if mode == "diag":
        return torch.stack([torch.einsum("naf,nbf->nab", j.flatten(2), j.flatten(2))
                            for j in j1.values()]).sum(0)
    j2 = j1 if X2 is None else vmap(jacrev(f), (None, 0))(params, X2)
    return torch.stack([torch.einsum("naf,mbf->nmab", a.flatten(2), b.flatten(2))
                        for a, b in zip(j1.values(), j2.values(), strict=True)]).sum(0)


def ntk_matvec_reference(model: nn.Module, X: torch.Tensor, dtype: torch.dtype | None
                         ) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""``v [N, d_out] -> Theta(X, X) v`` as :math:`J (J^T v)` by ``vjp`` then ``jvp``
    (memory O(#params + activations), never the Jacobian)."""
    quiet_jvp_import()
    params = func_params(model, dtype)

    def fp(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(model, p, (X,))

    pullback = vjp(fp, params)[1]

    def mv(v: torch.Tensor) -> torch.Tensor:
        (ct,) = pullback(v)
        return jvp(fp, (params,), (ct,))[1]
    return mv


def objective_fn(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, lam: float,
                 dtype: torch.dtype | None
                 ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    r"""The regularized objective as a function of the flat parameter vector:
    :math:`\frac1N \sum_i \|f(x_i) - y_i\|^2 + \lambda \|\theta\|^2`; returns ``(fn, theta0)``.
    """
    params = func_params(model, dtype)
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    theta0 = torch.cat([params[k].reshape(-1) for k in names])
    N = X.shape[0]

    def fn(theta: torch.Tensor) -> torch.Tensor:
        p = {k: t.reshape(s) for k, t, s in
             zip(names, torch.split(theta, sizes), shapes, strict=True)}
        r = functional_call(model, p, (X,)) - Y
        return r.pow(2).sum() / N + lam * theta.pow(2).sum()
    return fn, theta0


def hessian_dense(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, lam: float,
                  dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """Dense Hessian ``[P, P]`` of :func:`objective_fn` by classic double backward
    (``torch.autograd.functional.hessian``). Not ``torch.func.hessian``: with torch 2.13 its
    second derivatives through ``nn.LayerNorm`` are not symmetric (off by ~0.6 on a small net),
    while double backward and ``jvp`` of ``grad`` agree to 1e-15."""
    fn, theta0 = objective_fn(model, X, Y, lam, dtype)
    H = torch.autograd.functional.hessian(fn, theta0)
    assert isinstance(H, torch.Tensor)
    return H
