r"""Empirical neural tangent kernel (docs/theory.md#ntk).

For a chain with :math:`G_\ell(x) = \partial f(x) / \partial z_\ell` (``d_out x n_l``),

.. math::

    \Theta(x, x') = \sum_{\ell=1}^{L} \big(a_{\ell-1}(x) \cdot a_{\ell-1}(x') + \beta_\ell\big)
    \, G_\ell(x) G_\ell(x')^T,

with :math:`\beta_\ell = 1` if layer ``l`` has a bias and 0 otherwise; no per-parameter
Jacobian is ever formed (``implementation="structured"``). The ``N d_out x N d_out`` matrix
:math:`\Theta(X, X)` is indexed by ``(i, a) -> i * d_out + a`` (point-major), and its products
with a vector are :math:`J (J^T v)`, one backward and one forward-mode sweep over stored
activations (memory O(N sum n_l), time O(N sum n_l n_{l-1})). ``implementation="autodiff"``
contracts ``torch.func`` parameter Jacobians (chunks of points) and takes NTK-vector products
by ``vjp`` then ``jvp``; ``"auto"`` picks structured for chains, autodiff otherwise
(:class:`~bnstruct.diagnostics.Evaluation` names the choice in ``.implementation``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ._chain_evaluation import chain_ntk_matvec
from ._evaluation import NTK_DENSE_MAX, NTK_MODES, Evaluation

__all__ = ["ntk", "ntk_max_eig", "NTK_MODES", "NTK_DENSE_MAX", "chain_ntk_matvec"]


def ntk(model: nn.Module, X: torch.Tensor, X2: torch.Tensor | None = None,
        mode: str = "full", *, dtype: torch.dtype | None = torch.float64,
        implementation: str = "auto",
        output: int | str | Callable[[Any], torch.Tensor] | None = None) -> torch.Tensor:
    r"""Empirical NTK :math:`\Theta(x, x') = J_\theta f(x) J_\theta f(x')^T` (all parameters,
    biases included, no normalization).

    - ``mode="full"``: ``[N, N2, d_out, d_out]`` with ``[i, j] = Theta(x_i, x2_j)``
      (``X2=None`` means ``X2 = X``);
    - ``mode="trace"``: ``[N]``, :math:`\mathrm{tr}\,\Theta(x_i, x_i) = \sum_\ell
      (\|a_{\ell-1}(x_i)\|^2 + \beta_\ell) \|G_\ell(x_i)\|_F^2`;
    - ``mode="diag"``: ``[N, d_out, d_out]``, :math:`\Theta(x_i, x_i)`.

    ``implementation``: ``"structured"`` (chains; per-layer formula of the module docstring,
    memory O(N d_out max n_l) for trace/diag plus the output for full), ``"autodiff"``
    (``torch.func`` Jacobian contraction, any model) or ``"auto"`` (default: structured for
    chains). Computed in ``dtype`` (float64 default, ``None``: model's dtype). Any model whose
    forward maps ``[N, ...]`` to ``[N, d_out]`` (the model in eval mode; ``output`` selects
    the tensor of a tuple/dict output); trace, diag and the top eigenvalue never form the
    ``N d_out x P`` Jacobian (chunks of points; NTK-vector products).
    """
    if mode not in NTK_MODES:
        raise ConfigError(f"unknown NTK mode {mode!r}: choose one of {', '.join(NTK_MODES)}")
    if X2 is not None and mode != "full":
        raise ConfigError(f"mode={mode!r} is the kernel at (x_i, x_i): X2 must be None")
    ev = Evaluation(model, X, dtype=dtype, implementation=implementation, output=output)
    return ev.ntk(mode, X2)


def ntk_max_eig(model: nn.Module, X: torch.Tensor, *, method: str = "auto", tol: float = 1e-10,
                seed: int = 0, dtype: torch.dtype | None = torch.float64,
                implementation: str = "auto",
                output: int | str | Callable[[Any], torch.Tensor] | None = None) -> float:
    r"""Largest eigenvalue of the ``N d_out x N d_out`` NTK matrix :math:`\Theta(X, X)`.

    ``method="lanczos"``: Lanczos on NTK-vector products :math:`J(J^T v)` (never forms the
    matrix; peak memory O(N sum n_l) for chains); ``"dense"``: ``eigvalsh`` of the full
    matrix; ``"auto"`` (default): dense when ``N d_out <= NTK_DENSE_MAX`` (512), else Lanczos.
    ``tol`` is the relative accuracy of the Ritz residual; ``seed`` fixes the start vector.
    ``implementation`` as in :func:`ntk`. Compare with ``N (1/lr - lam)`` (docs/theory.md#ntk) or
    report ``ntk_max_eig / (N L)``.
    """
    if method not in ("auto", "lanczos", "dense"):
        raise ConfigError(f"unknown method {method!r}: choose auto, lanczos or dense")
    ev = Evaluation(model, X, dtype=dtype, implementation=implementation, output=output)
    return ev.ntk_max_eig(method, tol, seed)
