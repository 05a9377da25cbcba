r"""Closed forms and estimators of the representation cost (docs/theory.md, sections 2-4).

Linear maps (everything exact). For :math:`f(x) = A x` with nonzero singular values
:math:`s_1 \ge \dots \ge s_k > 0`, the depth-``L`` representation cost (the smallest
:math:`\sum_\ell \|W_\ell\|_F^2` with :math:`W_L \cdots W_1 = A`) is

.. math::

    R(A; L) = L \sum_{i \le k} s_i^{2/L}
            = L R_0 + R_1 + \frac{R_2}{L} + O(L^{-2}), \qquad
    R_0 = k,\quad R_1 = 2 \sum_i \log s_i = 2\log|A|_+,\quad R_2 = 2 \sum_i \log^2 s_i ,

attained by the balanced factors :math:`W_\ell = U_\ell \operatorname{diag}(s^{1/L})
U_{\ell-1}^T` (:func:`optimal_linear_factors`). The :math:`O(L^{-2})` term is
:math:`\tfrac{4}{3} \sum_i \log^3 s_i / L^2 + O(L^{-3})`.

Conventions:

* Matrices are ``[d_out, d_in]`` (PyTorch ``nn.Linear`` layout), given as NumPy arrays, torch
  tensors or nested lists; everything is computed in float64. Non-finite entries are a
  :class:`~bnstruct.errors.DataError`.
* "Nonzero" singular values are those above a *relative* threshold: ``s_i > rtol * s_1``.
  The default (``rtol=None``) is :func:`default_rtol`: ``max(d_out, d_in) * eps`` of the input's
  dtype (NumPy's ``matrix_rank`` convention; ``eps = 2.2e-16`` for float64, ``1.2e-7`` for
  float32 inputs). Singular values below it count as exactly zero everywhere (rank, cost,
  pseudo-determinant): without that, round-off singular values of ~1e-16 would add
  ``L * 1e-16^(2/L)`` (6e-3 at ``L = 10``) to :func:`linear_cost`.
* ``lam`` in training multiplies :math:`\|\theta\|^2` (PyTorch ``weight_decay = 2 * lam``);
  the statements here are about a network's own end-to-end matrix, whatever ``lam`` gave it.

Depth sweeps. :func:`fit_depth` estimates :math:`R_0` (slope) and :math:`R_1` (intercept) from
:math:`\|\theta\|^2` measured at several depths by ordinary least squares with standard errors;
:func:`bnstruct.depthfit.fit_depth_runs` does it for every group of runs in a store (this
module does no I/O and imports no store). :func:`ols` is the one least-squares fit with
standard errors (``fit_depth``, the claims' slopes and the figures' fitted lines read it);
:func:`slope_fit` is its slope of ``y`` against ``x``. The bottleneck rank is read from a
network by :func:`bnstruct.conventions.bottleneck_rank` (one definition).

Example::

    import numpy as np
    from bnstruct import theory

    A = np.diag([2.0, 1.0, 0.5, 0.0])
    theory.linear_cost(A, 4)                  # 4 * (2**0.5 + 1 + 0.5**0.5) = 12.49
    e = theory.linear_expansion(A)            # R0=3, R1=0.0, R2=1.92
    e.cost(4)                                 # 12.48: L R0 + R1 + R2 / L
    Ws = theory.optimal_linear_factors(A, 4)  # W_4 @ W_3 @ W_2 @ W_1 == A
    fit = theory.fit_depth([4, 6, 8, 10], [12.5, 18.3, 24.2, 30.2])
    fit.R0, fit.R0_err, fit.interval("R0")    # 2.95, 0.016, (2.88, 3.02): 95% t-interval
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .conventions import check_depth
from .errors import ConfigError, DataError

__all__ = [
    # linear maps: closed forms
    "default_rtol", "singular_values", "numerical_rank", "linear_cost", "LinearExpansion",
    "linear_expansion", "pdet", "log_pdet", "optimal_linear_factors",
    # R1 sub-additivity
    "R1Gap", "r1_composition_gap", "r1_addition_gap",
    # estimation from depth sweeps
    "DepthFit", "fit_depth", "OLS", "ols", "slope_fit",
]



# --------------------------------------------------------------------------- input checks


def _matrix(A: Any, what: str = "A") -> tuple[np.ndarray, float]:
    """``A`` (array-like) as a float64 NumPy matrix and the machine epsilon of its dtype."""
    try:
        arr = np.asarray(A)
    except (ValueError, TypeError) as e:
        raise DataError(f"{what} is not a numeric matrix ({e})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == np.bool_):
        raise DataError(f"{what} must be a numeric matrix, got dtype {arr.dtype}")
    eps = float(np.finfo(arr.dtype).eps) if np.issubdtype(arr.dtype, np.floating) else 2.2e-16
    arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise DataError(f"{what} must be a 2-d matrix [d_out, d_in], got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{what} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(f"{what} has {bad} NaN or inf entries: a cost is only defined for "
                        "finite matrices")
    return arr, eps


def _matrix_eps(A: Any, what: str = "A") -> tuple[np.ndarray, float]:
    """Like :func:`_matrix` but the epsilon follows a torch input's dtype."""
    if isinstance(A, torch.Tensor):
        eps = float(torch.finfo(A.dtype).eps) if A.dtype.is_floating_point else 2.2e-16
        arr, _ = _matrix(A.detach().cpu().double().numpy(), what)
        return arr, eps
    return _matrix(A, what)


def _rtol(rtol: float | None, shape: tuple[int, ...], eps: float) -> float:
    if rtol is None:
        return max(shape) * eps
    if not (isinstance(rtol, (int, float)) and math.isfinite(rtol) and 0 <= rtol < 1):
        raise ConfigError(f"rtol must be a number in [0, 1), got {rtol!r}")
    return float(rtol)


def _kept(A: Any, rtol: float | None, what: str = "A") -> tuple[np.ndarray, float, np.ndarray]:
    """(all singular values, threshold rtol, the nonzero ones) of ``A``."""
    arr, eps = _matrix_eps(A, what)
    s = np.linalg.svd(arr, compute_uv=False)
    r = _rtol(rtol, arr.shape, eps)
    keep = s[s > r * s[0]] if s[0] > 0 else s[:0]
    return s, r, keep


# --------------------------------------------------------------------------- linear maps


def default_rtol(A: Any) -> float:
    """The default relative rank threshold for ``A``: ``max(shape) * eps(dtype)``."""
    arr, eps = _matrix_eps(A)
    return max(arr.shape) * eps


def singular_values(A: Any) -> np.ndarray:
    """All ``min(d_out, d_in)`` singular values of ``A``, descending (float64)."""
    arr, _ = _matrix_eps(A)
    return np.linalg.svd(arr, compute_uv=False)


def numerical_rank(A: Any, rtol: float | None = None) -> int:
    """Number of singular values ``s_i > rtol * s_1`` (default :func:`default_rtol`)."""
    return int(_kept(A, rtol)[2].size)


def linear_cost(A: Any, L: int, *, rtol: float | None = None) -> float:
    r"""Representation cost of :math:`x \mapsto A x` at depth ``L``:
    :math:`R(A; L) = L \sum_i s_i(A)^{2/L}` over the nonzero singular values.

    This is the smallest :math:`\sum_{\ell=1}^L \|W_\ell\|_F^2` over all factorizations
    :math:`W_L \cdots W_1 = A` (any hidden widths; no biases). ``L = 1`` gives
    :math:`\|A\|_F^2`. Singular values ``<= rtol * s_1`` count as zero (module docstring).
    """
    L = check_depth(L)
    _, _, s = _kept(A, rtol)
    return float(L * np.sum(s ** (2.0 / L)))


@dataclass(frozen=True)
class LinearExpansion:
    r"""The depth expansion of a linear map's cost, :math:`R(A;L) = L R_0 + R_1 + R_2/L +
    O(L^{-2})`.

    Attributes:
        R0: rank: number of singular values ``> rtol * s_1``.
        R1: :math:`2 \sum_i \log s_i = 2 \log |A|_+` over those.
        R2: :math:`2 \sum_i \log^2 s_i`.
        rtol: the relative threshold that defined "nonzero".
        singular_values: the nonzero singular values, descending.
    """

    R0: int
    R1: float
    R2: float
    rtol: float
    singular_values: tuple[float, ...]

    def cost(self, L: int | float | np.ndarray) -> Any:
        """The truncated expansion ``L R0 + R1 + R2 / L`` (arrays allowed)."""
        Ls = np.asarray(L, dtype=np.float64)
        if np.any(~np.isfinite(Ls)) or np.any(Ls <= 0):
            raise ConfigError(f"L must be positive and finite, got {L!r}")
        v = Ls * self.R0 + self.R1 + self.R2 / Ls
        return float(v) if v.ndim == 0 else v


def linear_expansion(A: Any, rtol: float | None = None) -> LinearExpansion:
    """:math:`R_0, R_1, R_2` of ``A`` (see :class:`LinearExpansion`); ``rtol`` as in
    :func:`numerical_rank`."""
    _, r, s = _kept(A, rtol)
    ls = np.log(s)
    return LinearExpansion(int(s.size), float(2 * ls.sum()), float(2 * (ls ** 2).sum()), r,
                           tuple(float(v) for v in s))


def log_pdet(A: Any, k: int | None = None, *, rtol: float | None = None) -> float:
    r""":math:`\log |A|_k = \sum_{i \le k} \log s_i(A)` (top ``k`` singular values).

    ``k=None`` uses the numerical rank, giving the log pseudo-determinant
    :math:`\log |A|_+` (0 for the zero matrix: the empty product). An explicit ``k`` may reach
    into the zero singular values: the result is then ``-inf`` (exact zeros) or very negative.
    """
    s, _, kept = _kept(A, rtol)
    if k is None:
        return float(np.log(kept).sum())
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= s.size:
        raise ConfigError(f"k must be an integer in [0, min(A.shape)={s.size}], got {k!r}")
    top = s[:k]
    if np.any(top == 0):
        return float("-inf")
    return float(np.log(top).sum())


def pdet(A: Any, k: int | None = None, *, rtol: float | None = None) -> float:
    r""":math:`|A|_k = \prod_{i \le k} s_i(A)`; ``k=None``: the pseudo-determinant
    :math:`|A|_+` (product of the nonzero singular values). See :func:`log_pdet`, which is the
    safer one for large matrices (no overflow)."""
    return float(math.exp(log_pdet(A, k, rtol=rtol)))


def optimal_linear_factors(A: Any, L: int, *, width: int | Sequence[int] | None = None,
                           rtol: float | None = None) -> list[Any]:
    r"""The balanced factors :math:`W_1, \dots, W_L` of ``A`` with the smallest
    :math:`\sum_\ell \|W_\ell\|_F^2`, which equals :func:`linear_cost`.

    With :math:`A = U \operatorname{diag}(s) V^T` (nonzero part, rank ``k``):
    :math:`W_1 = E_1 \operatorname{diag}(s^{1/L}) V^T`,
    :math:`W_\ell = E_\ell \operatorname{diag}(s^{1/L}) E_{\ell-1}^T`,
    :math:`W_L = U \operatorname{diag}(s^{1/L}) E_{L-1}^T`, where :math:`E_\ell` is the first
    ``k`` columns of the identity of size ``n_\ell`` (the signal uses the first ``k`` hidden
    neurons). Every factor has exactly ``k`` nonzero singular values :math:`s_i^{1/L}`.

    Args:
        A: ``[d_out, d_in]``.
        L: number of factors, ``>= 1``.
        width: hidden widths ``n_1..n_{L-1}`` (an int for all, or a list of ``L-1``); each must
            be ``>= k``. Default ``k`` (``1`` for the zero matrix).
        rtol: rank threshold (module docstring).

    Returns:
        ``[W_1, ..., W_L]`` with ``W_l`` of shape ``[n_l, n_{l-1}]`` (``nn.Linear`` layout, so
        ``lin.weight.copy_(W)`` loads them into a :class:`~bnstruct.DeepLinear`). Torch tensors
        with ``A``'s dtype and device when ``A`` is a tensor, else float64 NumPy arrays.
    """
    L = check_depth(L)
    arr, eps = _matrix_eps(A)
    r = _rtol(rtol, arr.shape, eps)
    U, s, Vt = np.linalg.svd(arr, full_matrices=False)
    k = int((s > r * s[0]).sum()) if s[0] > 0 else 0
    U, s, Vt = U[:, :k], s[:k], Vt[:k]
    if width is None:
        hidden = [max(k, 1)] * (L - 1)
    elif isinstance(width, (int, np.integer)):
        hidden = [int(width)] * (L - 1)
    else:
        hidden = [int(w) for w in width]
        if len(hidden) != L - 1:
            raise ConfigError(f"width list has {len(hidden)} entries; L = {L} needs L-1 = "
                              f"{L - 1}")
    if any(w < max(k, 1) for w in hidden):
        raise ConfigError(f"hidden widths {hidden} are too narrow: A has rank {k}, so every "
                          f"hidden width must be >= {max(k, 1)}")
    root = np.diag(s ** (1.0 / L))
    bases = [Vt.T] + [np.eye(n)[:, :k] for n in hidden] + [U]  # input, hidden..., output
    Ws = [bases[l + 1] @ root @ bases[l].T for l in range(L)]
    if isinstance(A, torch.Tensor):
        dt = A.dtype if A.dtype.is_floating_point else torch.float64
        return [torch.as_tensor(W, dtype=dt, device=A.device) for W in Ws]
    return Ws


# --------------------------------------------------------------------------- R1 gaps


@dataclass(frozen=True)
class R1Gap:
    r"""Both sides of one R1 sub-additivity inequality for linear maps.

    ``lhs = R1(combined)``, ``rhs = R1(A) + R1(B)``, ``gap = rhs - lhs`` (``>= 0`` whenever
    ``condition_met``). ``ranks`` holds ``A``, ``B`` and ``combined`` (the numerical ranks,
    i.e. R0). ``condition`` states the rank condition in words.
    """

    kind: str
    lhs: float
    rhs: float
    gap: float
    condition_met: bool
    ranks: dict[str, int]
    condition: str
    rtol: float | None


def _r1_and_rank(M: np.ndarray, rtol: float | None) -> tuple[float, int]:
    e = linear_expansion(M, rtol)
    return e.R1, e.R0


def r1_composition_gap(A: Any, B: Any, *, rtol: float | None = None) -> R1Gap:
    r"""R1 under composition: :math:`R_1(A B) \le R_1(A) + R_1(B)` when
    :math:`\operatorname{rank}(AB) = \operatorname{rank} A = \operatorname{rank} B`.

    (``A`` after ``B``: the map :math:`x \mapsto A B x`.) Proof sketch: with equal ranks ``k``,
    :math:`|AB|_+ = |A|_+ |B|_+ |\det(V_A^T U_B)|` and the ``k x k`` matrix
    :math:`V_A^T U_B` has singular values (cosines of principal angles) ``<= 1``.
    The ranks are always reported; R0 is sub-additive unconditionally:
    ``rank(AB) <= min(rank A, rank B)``.
    """
    a, _ = _matrix_eps(A, "A")
    b, _ = _matrix_eps(B, "B")
    if a.shape[1] != b.shape[0]:
        raise DataError(f"A {a.shape} and B {b.shape} do not compose: A's d_in {a.shape[1]} "
                        f"must equal B's d_out {b.shape[0]}")
    r1a, ka = _r1_and_rank(A, rtol)
    r1b, kb = _r1_and_rank(B, rtol)
    r1ab, kab = _r1_and_rank(a @ b, rtol)
    return R1Gap("composition", r1ab, r1a + r1b, r1a + r1b - r1ab, ka == kb == kab,
                 {"A": ka, "B": kb, "combined": kab}, "rank(AB) = rank(A) = rank(B)", rtol)


def r1_addition_gap(A: Any, B: Any, *, rtol: float | None = None) -> R1Gap:
    r"""R1 under addition: :math:`R_1(A + B) \le R_1(A) + R_1(B)` when
    :math:`\operatorname{rank}(A + B) = \operatorname{rank} A + \operatorname{rank} B`.

    Proof sketch: then :math:`|A+B|_+ = |A|_+ |B|_+ \, |[U_A\, U_B]|_+ \, |[V_A\, V_B]|_+`,
    and a matrix with unit-norm columns has pseudo-determinant ``<= 1`` (Hadamard).
    R0 is sub-additive unconditionally: ``rank(A+B) <= rank A + rank B``.
    """
    a, _ = _matrix_eps(A, "A")
    b, _ = _matrix_eps(B, "B")
    if a.shape != b.shape:
        raise DataError(f"A {a.shape} and B {b.shape} cannot be added: shapes differ")
    r1a, ka = _r1_and_rank(A, rtol)
    r1b, kb = _r1_and_rank(B, rtol)
    r1s, ks = _r1_and_rank(a + b, rtol)
    return R1Gap("addition", r1s, r1a + r1b, r1a + r1b - r1s, ks == ka + kb,
                 {"A": ka, "B": kb, "combined": ks}, "rank(A+B) = rank(A) + rank(B)", rtol)


# --------------------------------------------------------------------------- depth fits


@dataclass(frozen=True)
class DepthFit:
    r"""Least-squares fit of :math:`\|\theta\|^2` against depth ``L``.

    Model: ``norm2 = R0 * L + R1`` (``order=1``) or ``R0 * L + R1 + R2 / L`` (``order=2``);
    with ``k`` given, ``R0`` is fixed at ``k`` (``R0_err = 0``) and only the rest is fitted.

    Attributes:
        R0, R0_err: slope (rank estimate) and its standard error.
        R1, R1_err: intercept (regularity estimate) and its standard error.
        R2, R2_err: the ``1/L`` coefficient (``None`` for ``order=1``).
        residuals: ``norm2 - fitted`` per point, in input order.
        depths, norms2: the data.
        n: number of points; ``dof``: ``n`` minus the number of fitted coefficients.
        sigma: residual standard deviation ``sqrt(RSS / dof)`` (``nan`` if ``dof == 0``).
        k: the fixed slope, or ``None``.
        order: 1 or 2.
        method: a description of the estimator.

    Standard errors are the ordinary least-squares ones, ``sigma^2 (X^T X)^{-1}``: honest for
    independent, equal-variance noise (e.g. seeds); they are ``nan`` when ``dof == 0`` (as many
    coefficients as points: an exact fit says nothing about its uncertainty). Use
    :meth:`interval` for Student-t confidence intervals (right for few points).
    """

    R0: float
    R0_err: float
    R1: float
    R1_err: float
    R2: float | None
    R2_err: float | None
    residuals: tuple[float, ...]
    depths: tuple[float, ...]
    norms2: tuple[float, ...]
    n: int
    dof: int
    sigma: float
    k: float | None
    order: int
    method: str

    def predict(self, L: Any) -> Any:
        """Fitted ``norm2`` at depth(s) ``L``."""
        Ls = np.asarray(L, dtype=np.float64)
        v = self.R0 * Ls + self.R1 + (0.0 if self.R2 is None else self.R2 / Ls)
        return float(v) if np.ndim(v) == 0 else v

    def interval(self, name: str = "R0", level: float = 0.95) -> tuple[float, float]:
        """Two-sided Student-t confidence interval of ``R0``, ``R1`` or ``R2`` at ``level``
        (``dof`` degrees of freedom; ``(nan, nan)`` when ``dof == 0``)."""
        from scipy import stats

        if name not in ("R0", "R1", "R2") or getattr(self, name) is None:
            raise ConfigError(f"no coefficient {name!r} in this fit: choose R0, R1"
                              + (", R2" if self.R2 is not None else ""))
        if not 0 < level < 1:
            raise ConfigError(f"level must be in (0, 1), got {level!r}")
        v, e = getattr(self, name), getattr(self, f"{name}_err")
        if self.dof < 1:
            return (float("nan"), float("nan"))
        t = float(stats.t.ppf(0.5 + level / 2, self.dof))
        return (v - t * e, v + t * e)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_depth(depths: Any, norms2: Any, *, k: float | None = None, order: int = 1) -> DepthFit:
    r"""Fit :math:`\|\theta\|^2 = R_0 L + R_1 \ (+ R_2 / L)` by ordinary least squares.

    Args:
        depths: depth ``L`` of each run (``>= 1``); repeated depths (e.g. several seeds) are
            fine and improve the error estimate.
        norms2: :math:`\|\theta\|^2` of each run (same length).
        k: fix the slope at ``k`` (e.g. the known bottleneck rank) and fit only the rest.
        order: ``1`` for ``a L + b``, ``2`` to add the ``c / L`` term.

    Needs at least two distinct depths (three for ``order=2``); otherwise a
    :class:`~bnstruct.errors.DataError` says how many there are.
    """
    if order not in (1, 2):
        raise ConfigError(f"order must be 1 (a L + b) or 2 (a L + b + c/L), got {order!r}")
    Ls = np.asarray(depths, dtype=np.float64).ravel()
    y = np.asarray(norms2, dtype=np.float64).ravel()
    if Ls.shape != y.shape:
        raise DataError(f"depths ({Ls.size}) and norms2 ({y.size}) must have the same length")
    if not (np.isfinite(Ls).all() and np.isfinite(y).all()):
        raise DataError("depths and norms2 must be finite (drop diverged runs before fitting)")
    if np.any(Ls < 1):
        raise DataError(f"depths must be >= 1, got {sorted(set(Ls.tolist()))}")
    if k is not None and not (isinstance(k, (int, float, np.number)) and math.isfinite(k)):
        raise ConfigError(f"k (the fixed slope) must be a finite number, got {k!r}")
    distinct = np.unique(Ls)
    need = 2 if order == 1 else 3
    if distinct.size < need:
        raise DataError(f"need runs at >= {need} distinct depths to fit norm2 against L"
                        f"{'' if order == 1 else ' with a 1/L term'}; got depths "
                        f"{[int(v) if v.is_integer() else v for v in distinct.tolist()]}")
    cols = [] if k is not None else [Ls]
    cols.append(np.ones_like(Ls))
    if order == 2:
        cols.append(1.0 / Ls)
    X = np.stack(cols, 1)
    target = y - (float(k) * Ls if k is not None else 0.0)
    o = ols(X, target)
    resid, n, dof, sigma = o.resid, X.shape[0], o.dof, o.sigma
    vals, ses = list(o.beta), list(o.se)
    if k is not None:
        R0, R0e = float(k), 0.0
    else:
        R0, R0e = float(vals.pop(0)), float(ses.pop(0))
    R1, R1e = float(vals.pop(0)), float(ses.pop(0))
    R2 = float(vals[0]) if order == 2 else None
    R2e = float(ses[0]) if order == 2 else None
    terms = "R0 L + R1" + (" + R2/L" if order == 2 else "")
    method = f"OLS norm2 = {terms}" + (f", slope fixed at k={k:g}" if k is not None else "")
    return DepthFit(R0, R0e, R1, R1e, R2, R2e, tuple(float(v) for v in resid),
                    tuple(float(v) for v in Ls), tuple(float(v) for v in y), n, dof, sigma,
                    None if k is None else float(k), order, method)


@dataclass(frozen=True, eq=False)
class OLS:
    """Outcome of :func:`ols`: coefficients ``beta`` (``[p]``), their standard errors ``se``
    (NaN when ``dof == 0``), residuals ``resid`` (``[n]``), ``dof = n - p`` and the residual
    standard deviation ``sigma``."""

    beta: np.ndarray
    se: np.ndarray
    resid: np.ndarray
    dof: int
    sigma: float


def ols(X: Any, y: Any) -> OLS:
    r"""Ordinary least squares :math:`\min_\beta \|X\beta - y\|^2` (``X``: ``[n, p]`` of
    full column rank, ``y``: ``[n]``) with the classical standard errors
    :math:`\sigma \sqrt{\mathrm{diag}(X^TX)^{-1}}`, :math:`\sigma^2 = \|r\|^2/(n-p)`."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    n, p = X.shape
    dof = n - p
    if dof > 0:
        sigma = float(np.sqrt(resid @ resid / dof))
        se = sigma * np.sqrt(np.diag(np.linalg.inv(X.T @ X)))
    else:
        sigma = float("nan")
        se = np.full(p, np.nan)
    return OLS(beta, se, resid, dof, sigma)


def slope_fit(x: Any, y: Any) -> tuple[float, float]:
    """Least-squares slope of ``y`` against ``x`` (:func:`ols` with an intercept) and its
    standard error: ``(nan, nan)`` with < 2 points or one distinct ``x``; the error is nan
    with < 3 points. Repeated ``x`` (seeds) are fine."""
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if x.size < 2 or np.unique(x).size < 2:
        return float("nan"), float("nan")
    # centred (the same slope and error): a constant y gives a slope of exactly 0
    xc, yc = x - x.mean(), y - y.mean()
    o = ols(np.stack([xc, np.ones_like(xc)], 1), yc)
    return float(o.beta[0]), float(o.se[0])
