r"""Empirical neural tangent kernel from per-layer factors (THEORY section 4).

For a chain with :math:`G_\ell(x) = \partial f(x) / \partial z_\ell` (``d_out x n_l``),

.. math::

    \Theta(x, x') = \sum_{\ell=1}^{L} \big(a_{\ell-1}(x) \cdot a_{\ell-1}(x') + \beta_\ell\big)
    \, G_\ell(x) G_\ell(x')^T,

with :math:`\beta_\ell = 1` if layer ``l`` has a bias and 0 otherwise; no per-parameter
Jacobian is ever formed. The ``N d_out x N d_out`` matrix :math:`\Theta(X, X)` is indexed by
``(i, a) -> i * d_out + a`` (point-major), and its products with a vector are
:math:`J (J^T v)`, one backward and one forward-mode sweep over stored activations (memory
O(N sum n_l), time O(N sum n_l n_{l-1})).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError
from ._chain import Chain, Forward, backward_factors, check_X, forward, is_chain, parse_chain
from ._jacobian import generic_d_in
from ._lanczos import top_eig
from .reference import ntk_matvec_reference, ntk_reference

__all__ = ["ntk", "ntk_max_eig", "NTK_MODES", "NTK_DENSE_MAX"]

NTK_MODES = ("full", "trace", "diag")
#: ``ntk_max_eig(method="auto")`` forms the matrix when ``N * d_out`` is at most this.
NTK_DENSE_MAX = 512


def _input_gram(a1: torch.Tensor, a2: torch.Tensor, bias: bool) -> torch.Tensor:
    K = a1 @ a2.T
    return K + 1 if bias else K


def _ntk_chain(chain: Chain, X: torch.Tensor, X2: torch.Tensor | None, mode: str
               ) -> torch.Tensor:
    fw = forward(chain, X)
    N, d = X.shape[0], chain.d_out
    if mode in ("trace", "diag"):
        acc = None
        for l, G in backward_factors(chain, fw):
            a = fw.a[l - 1]
            q = a.pow(2).sum(1) + (1.0 if chain.biases[l - 1] is not None else 0.0)
            term = (q * G.pow(2).sum((1, 2)) if mode == "trace"
                    else q[:, None, None] * (G @ G.transpose(1, 2)))
            acc = term if acc is None else acc + term
        assert acc is not None
        return acc
    if X2 is None:
        return _ntk_full_sym(chain, fw)
    fw2 = forward(chain, X2)
    N2 = fw2.out.shape[0]
    acc = torch.zeros(N * d, N2 * d, dtype=X.dtype, device=X.device)
    it2 = backward_factors(chain, fw2)
    for l, G in backward_factors(chain, fw):
        G2 = next(it2)[1]
        K = _input_gram(fw.a[l - 1], fw2.a[l - 1], chain.biases[l - 1] is not None)
        gram = G.reshape(N * d, -1) @ G2.reshape(N2 * d, -1).T
        acc.view(N, d, N2, d).addcmul_(gram.view(N, d, N2, d), K[:, None, :, None])
    return acc.view(N, d, N2, d).permute(0, 2, 1, 3).contiguous()


#: row-block size (points) of the symmetric full kernel
_SYM_BLOCK = 32


def _ntk_full_sym(chain: Chain, fw: Forward) -> torch.Tensor:
    r"""``Theta(X, X)``: only blocks ``(i, j)`` with ``j <= end of i's row block`` are computed
    (about half the matmul work), the rest from :math:`\Theta(x_j, x_i) = \Theta(x_i,
    x_j)^T`."""
    N, d = fw.out.shape[0], chain.d_out
    acc = torch.zeros(N * d, N * d, dtype=fw.out.dtype, device=fw.out.device)
    blocks = [(i0, min(i0 + _SYM_BLOCK, N)) for i0 in range(0, N, _SYM_BLOCK)]
    for l, G in backward_factors(chain, fw):
        K = _input_gram(fw.a[l - 1], fw.a[l - 1], chain.biases[l - 1] is not None)
        Gf = G.reshape(N * d, -1)
        for i0, i1 in blocks:
            gram = Gf[i0 * d:i1 * d] @ Gf[:i1 * d].T
            acc[i0 * d:i1 * d, :i1 * d].view(i1 - i0, d, i1, d).addcmul_(
                gram.view(i1 - i0, d, i1, d), K[i0:i1, :i1, None].unsqueeze(1))
    out = acc.view(N, d, N, d).permute(0, 2, 1, 3).contiguous()
    del acc
    iu = torch.triu_indices(N, N, offset=1, device=out.device)
    out[iu[0], iu[1]] = out[iu[1], iu[0]].transpose(-1, -2)
    return out


def ntk(model: nn.Module, X: torch.Tensor, X2: torch.Tensor | None = None,
        mode: str = "full", *, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    r"""Empirical NTK :math:`\Theta(x, x') = J_\theta f(x) J_\theta f(x')^T` (all parameters,
    biases included, no normalization).

    - ``mode="full"``: ``[N, N2, d_out, d_out]`` with ``[i, j] = Theta(x_i, x2_j)``
      (``X2=None`` means ``X2 = X``);
    - ``mode="trace"``: ``[N]``, :math:`\mathrm{tr}\,\Theta(x_i, x_i) = \sum_\ell
      (\|a_{\ell-1}(x_i)\|^2 + \beta_\ell) \|G_\ell(x_i)\|_F^2`;
    - ``mode="diag"``: ``[N, d_out, d_out]``, :math:`\Theta(x_i, x_i)`.

    Chains use the per-layer formula of the module docstring (memory O(N d_out max n_l) for
    trace/diag, plus the output for full); other models fall back to the ``torch.func``
    Jacobian contraction. Computed in ``dtype`` (float64 default, ``None``: model's dtype).
    """
    if mode not in NTK_MODES:
        raise ConfigError(f"unknown NTK mode {mode!r}: choose one of {', '.join(NTK_MODES)}")
    if X2 is not None and mode != "full":
        raise ConfigError(f"mode={mode!r} is the kernel at (x_i, x_i): X2 must be None")
    if not is_chain(model):
        d_in = generic_d_in(model)
        dt = dtype or next(model.parameters()).dtype
        X = check_X(X, d_in, dt)
        X2 = None if X2 is None else check_X(X2, d_in, dt, name="X2")
        with torch.no_grad():
            return ntk_reference(model, X, X2, mode, dtype)
    chain = parse_chain(model, dtype)
    dev = chain.weights[0].device
    X = check_X(X, chain.d_in, chain.dtype, dev)
    X2 = None if X2 is None else check_X(X2, chain.d_in, chain.dtype, dev, name="X2")
    with torch.no_grad():
        return _ntk_chain(chain, X, X2, mode)


def chain_ntk_matvec(chain: Chain, fw: Forward) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""``v [N, d_out] -> Theta(X, X) v = J (J^T v)`` from the stored forward pass ``fw``."""
    L = chain.depth

    def mv(v: torch.Tensor) -> torch.Tensor:
        # J^T v: parameter cotangent by backpropagation
        delta = v if fw.d[-1] is None else v * fw.d[-1]
        gW: list[torch.Tensor] = [torch.empty(0)] * L
        gb: list[torch.Tensor | None] = [None] * L
        for l in range(L - 1, -1, -1):
            gW[l] = delta.T @ fw.a[l]
            if chain.biases[l] is not None:
                gb[l] = delta.sum(0)
            if l > 0:
                delta = delta @ chain.weights[l]
                if fw.d[l - 1] is not None:
                    delta = delta * fw.d[l - 1]
        # J w: forward-mode sweep with the parameter tangent w = (gW, gb)
        zdot = None
        for l in range(L):
            t = fw.a[l] @ gW[l].T
            if zdot is not None:
                adot = zdot if fw.d[l - 1] is None else zdot * fw.d[l - 1]
                t = t + adot @ chain.weights[l].T
            b = gb[l]
            zdot = t if b is None else t + b
        assert zdot is not None
        return zdot if fw.d[-1] is None else zdot * fw.d[-1]
    return mv


def ntk_max_eig(model: nn.Module, X: torch.Tensor, *, method: str = "auto", tol: float = 1e-10,
                seed: int = 0, dtype: torch.dtype | None = torch.float64) -> float:
    r"""Largest eigenvalue of the ``N d_out x N d_out`` NTK matrix :math:`\Theta(X, X)`.

    ``method="lanczos"``: ARPACK Lanczos on NTK-vector products :math:`J(J^T v)` (never forms
    the matrix; peak memory O(N sum n_l) for chains); ``"dense"``: ``eigvalsh`` of the full
    matrix; ``"auto"`` (default): dense when ``N d_out <= NTK_DENSE_MAX`` (512), else Lanczos.
    ``tol`` is ARPACK's relative accuracy; ``seed`` fixes the start vector. Compare with
    ``N (1/lr - lam)`` (THEORY 4) or report ``ntk_max_eig / (N L)``.
    """
    if method not in ("auto", "lanczos", "dense"):
        raise ConfigError(f"unknown method {method!r}: choose auto, lanczos or dense")
    chained = is_chain(model)
    if chained:
        chain = parse_chain(model, dtype)
        X = check_X(X, chain.d_in, chain.dtype, chain.weights[0].device)
        d_out = chain.d_out
    else:
        X = check_X(X, generic_d_in(model), dtype or next(model.parameters()).dtype)
        with torch.no_grad():
            d_out = model(X[:1].to(next(model.parameters()).dtype)).shape[1]
    n = X.shape[0] * d_out
    if method == "dense" or (method == "auto" and n <= NTK_DENSE_MAX):
        K = ntk(model, X, mode="full", dtype=dtype)
        M = K.permute(0, 2, 1, 3).reshape(n, n)
        return float(torch.linalg.eigvalsh((M + M.T) / 2)[-1])
    if chained:
        with torch.no_grad():
            fw = forward(chain, X)
        mv = chain_ntk_matvec(chain, fw)
    else:
        mv = ntk_matvec_reference(model, X, dtype)
    N = X.shape[0]

    @torch.no_grad()
    def flat(v: torch.Tensor) -> torch.Tensor:
        return mv(v.reshape(N, d_out)).reshape(-1)
    return top_eig(flat, n, dtype=X.dtype, device=X.device, tol=tol, seed=seed)
