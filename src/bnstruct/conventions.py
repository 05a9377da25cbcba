r"""The one place where bnstruct's conventions are defined (docs/theory.md, sections 1, 4 and 8).

Every table, claim, estimator and figure imports its definitions from here, so a number means
the same thing in ``bnstruct analyze``, in ``claims.json`` and in :mod:`bnstruct.theory`.

Layers. A network of depth ``L`` has weight matrices ``W_1 .. W_L`` (``W_l``:
``[n_l, n_{l-1}]``, PyTorch ``nn.Linear`` layout). Layer ``l`` (1-based) is ``W_l`` together
with the representation it hands on, :math:`a_\ell = \sigma(z_\ell)` for ``l < L`` and
:math:`f(x) = z_L` for ``l = L``.

- **Middle layers** (:func:`middle_layers`): ``L/4 < l <= 3L/4``, the central half, away from
  the input and output layers where the network does its nonlinear work in more dimensions.
  The theory's "almost all layers" statements are checked there.
- **Interior layers** (:func:`interior_layers`): every layer but the first and the last
  (all of them when ``L < 3``). The bottleneck-rank estimate searches the interior.
- **Skipped layers** (:func:`skip_reason`): fewer than two singular values or ``s_1 = 0``;
  they never enter a spectral rank or the bottleneck-rank estimate.

The bottleneck rank (:func:`bottleneck_rank`, the one definition: ``bnstruct analyze`` on
any model, the claims and the figures read it). The theory predicts that most weight
matrices of a trained network have ``k`` singular values near 1 and the rest small, so the
spectrum of ``W_l`` has its largest gap after ``s_k`` (docs/theory.md, sections 4-5). Tried in
order:

- ``"weight-gap-min"``: the smallest :func:`gap_rank` shared by at least two consecutive
  interior layers whose gap is clear (``s_i / s_{i+1} >= GAP_MIN``): the narrowest consistent
  point of the network (``Rank_BN`` is a minimum over factorizations, and at finite depth the
  layers next to the input and output do nonlinear work in more dimensions);
- ``"weight-gap-mode"``: if no two consecutive layers agree, the most common gap rank over
  interior layers with a clear gap (ties: the smallest);
- ``"jacobian-rank"``: if no layer has a clear gap, the largest numerical rank of ``Jf(x)``
  over the points (``Rank_J <= Rank_BN``).

Both gap estimates are capped at the narrowest weight, ``min_l min(n_l, n_{l-1})``.

Weight singular values.

- **Near 1** (:func:`near_one`): ``s`` in :data:`NEAR_ONE` ``= [1/2, 2]``, a band symmetric in
  ``log s`` (the limit values are exactly 1; at finite depth they sit at ``s^{1/L}``-like
  values such as 1.4, and the small ones are ``O(L^{-1/2})``).
- **Clear gap at k** (:func:`clear_gap`): ``s_k >= GAP_MIN * s_{k+1}`` with ``s_k > 0``.
- **Gap rank** (:func:`gap_rank`): the position ``i`` of the largest ratio
  ``s_i / s_{i+1}`` among the significant values ``s_i >= THRESHOLD_RTOL * s_1``.

Ranks of a spectrum ``s`` (singular values, descending). Each method has its own name, and a
column holding it says which (``rep_rank_numerical``, ``rep_erank_participation``, ...):

- ``numerical`` (:func:`numerical_rank`): ``#{s_i > s_1 max(shape) eps}``, NumPy's
  ``matrix_rank`` rule, ``eps`` of the dtype the matrix is known to;
- ``threshold``: ``#{s_i > THRESHOLD_RTOL s_1}``;
- ``participation``: :math:`(\sum s_i^2)^2 / \sum s_i^4` (below ``k`` for any anisotropic
  ``k``-dimensional cloud: reported, never used alone to judge a rank);
- ``entropy``: :math:`\exp(H(p))`, :math:`p_i = s_i / \sum s_j` (Roy and Vetterli).

Representations are always **centered** over the points before their spectrum is taken
(:func:`center`): the dimension of the cloud, not its offset.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from .errors import ConfigError, DataError

__all__ = [
    "NEAR_ONE", "GAP_MIN", "THRESHOLD_RTOL", "TOP_SINGULAR_VALUES", "RANK_METHODS", "RankMethod",
    "middle_layers", "interior_layers", "near_one", "count_near_one", "clear_gap", "gap_rank",
    "center", "effective_rank", "numerical_rank", "as_spectrum", "summary",
    "ENERGY_TOL", "energy_rank", "check_depth", "skip_reason", "bottleneck_rank",
    "BOTTLENECK_RANK_METHODS",
]

#: a weight singular value is "near 1" when it lies in this closed band (symmetric in log s)
NEAR_ONE: tuple[float, float] = (0.5, 2.0)
#: a spectrum has a "clear gap" at k when s_k / s_{k+1} >= GAP_MIN
GAP_MIN: float = 2.0
#: relative threshold of the ``threshold`` rank and of the significant values in ``gap_rank``
THRESHOLD_RTOL: float = 0.1
#: singular values shown per layer in tables (s1..s4)
TOP_SINGULAR_VALUES: int = 4

RankMethod = Literal["numerical", "threshold", "participation", "entropy"]
RANK_METHODS: tuple[str, ...] = ("numerical", "threshold", "participation", "entropy")


def check_depth(L: Any) -> int:
    """``L`` as an ``int``; a :class:`ConfigError` unless it is an integer ``>= 1``."""
    if isinstance(L, bool) or not isinstance(L, int | np.integer) or L < 1:
        raise ConfigError(f"depth L must be an integer >= 1 (number of weight matrices), "
                          f"got {L!r}")
    return int(L)


def middle_layers(L: int) -> list[int]:
    """1-based indices ``l`` of the middle layers: ``L/4 < l <= 3L/4`` (at least one)."""
    L = check_depth(L)
    lo, hi = L // 4 + 1, (3 * L) // 4
    if hi < lo:
        lo = hi = (L + 1) // 2
    return list(range(lo, hi + 1))


def interior_layers(L: int) -> list[int]:
    """1-based indices of every layer but the first and the last (all layers when ``L < 3``)."""
    L = check_depth(L)
    return list(range(2, L)) if L >= 3 else list(range(1, L + 1))


def as_spectrum(S: Any) -> np.ndarray:
    """Singular values as a 1-d float64 NumPy array sorted in descending order; raise
    :class:`DataError` for negative or non-finite values."""
    if torch.is_tensor(S):
        S = S.detach().cpu().to(torch.float64).numpy()
    s = np.asarray(S, dtype=np.float64).ravel()
    if s.size and (not np.isfinite(s).all() or (s < 0).any()):
        raise DataError("singular values must be finite and non-negative")
    return np.sort(s)[::-1]


def near_one(s: Any) -> np.ndarray:
    """Boolean mask of the values of ``s`` inside :data:`NEAR_ONE` (closed band)."""
    v = np.asarray(s, dtype=np.float64)
    return (v >= NEAR_ONE[0]) & (v <= NEAR_ONE[1])


def count_near_one(s: Any) -> int:
    """How many singular values of ``s`` lie in :data:`NEAR_ONE`."""
    return int(near_one(s).sum())


def clear_gap(s: Any, k: int) -> bool:
    """``s_k >= GAP_MIN * s_{k+1}`` and ``s_k > 0`` (1-based ``k``; False outside ``1..len-1``)."""
    s = as_spectrum(s)
    if k < 1 or k >= s.size:
        return False
    return bool(s[k - 1] > 0 and s[k - 1] >= GAP_MIN * s[k])


def gap_rank(s: Any) -> tuple[int, float]:
    """``(i, s_i / s_{i+1})`` for the largest ratio among significant ``s_i``
    (``s_i >= THRESHOLD_RTOL * s_1``). Restricting to significant values ignores the spread-out
    small end of a random spectrum. Needs at least two values and ``s_1 > 0``."""
    s = as_spectrum(s)
    if s.size < 2 or s[0] <= 0:
        raise DataError("gap_rank needs at least two singular values and s_1 > 0")
    ls = np.log(np.maximum(s, np.finfo(np.float64).tiny))
    d = ls[:-1] - ls[1:]
    d[s[:-1] < THRESHOLD_RTOL * s[0]] = -np.inf
    i = int(np.argmax(d))
    return i + 1, float(np.exp(d[i]))


def center(A: torch.Tensor) -> torch.Tensor:
    """``A - mean over points``: ``[N, n] -> [N, n]``, the representation's cloud of points."""
    return A - A.mean(0, keepdim=True)


def _spectrum_1d(S: Any) -> torch.Tensor:
    t = S.detach() if torch.is_tensor(S) else torch.as_tensor(np.asarray(S))
    if t.dim() > 1:
        raise DataError(f"a spectrum must be 1-d, got shape {tuple(t.shape)}")
    s = t.to(torch.float64).reshape(-1)
    if not torch.isfinite(s).all():
        raise DataError("the spectrum has non-finite values (NaN/inf)")
    if (s < 0).any():
        raise DataError(f"singular values must be >= 0, got min {float(s.min()):g}")
    return s


def effective_rank(S: Any, method: str = "entropy", rtol: float = THRESHOLD_RTOL) -> float:
    r"""Effective rank of a spectrum of singular values ``S`` (1-d, >= 0, any order).

    Methods (all equal ``r`` for ``r`` equal nonzero singular values, and 0 for ``S = 0``):

    - ``"entropy"`` (Roy and Vetterli 2007): :math:`\exp H(p)`, :math:`p_i = s_i / \sum_j s_j`,
      :math:`H(p) = -\sum_i p_i \log p_i`.
    - ``"participation"``: participation ratio of the eigenvalues :math:`\lambda_i = s_i^2`
      of the Gram matrix, :math:`(\sum_i s_i^2)^2 / \sum_i s_i^4`.
    - ``"threshold"``: :math:`\#\{i : s_i > \mathrm{rtol} \cdot s_1\}` (``rtol`` is relative
      to the largest value; only this method uses it).

    (``numerical`` needs the matrix shape and dtype: :func:`numerical_rank`.)
    """
    if method not in ("entropy", "participation", "threshold"):
        raise ConfigError(f"unknown effective-rank method {method!r}: choose one of "
                          "entropy, participation, threshold (numerical: numerical_rank)")
    if not (isinstance(rtol, int | float) and 0 <= rtol < 1):
        raise ConfigError(f"rtol must be a number in [0, 1), got {rtol!r}")
    s = _spectrum_1d(S)
    if s.numel() == 0 or float(s.max()) == 0.0:
        return 0.0
    if method == "threshold":
        return float((s > rtol * s.max()).sum())
    if method == "participation":
        s2 = s.pow(2) / s.max().pow(2)  # scale-free, no overflow
        return float(s2.sum().pow(2) / s2.pow(2).sum())
    p = s / s.sum()
    p = p[p > 0]
    return float(math.exp(float(-(p * p.log()).sum())))


def numerical_rank(S: Any, shape: tuple[int, ...], eps: float) -> int:
    r"""Numerical rank as in ``numpy.linalg.matrix_rank``: :math:`\#\{s_i > s_1 \max(m, n)
    \epsilon\}` for an ``m x n`` matrix and machine epsilon ``eps`` of the precision the
    matrix is known to (e.g. the model's dtype for its representations)."""
    s = _spectrum_1d(S)
    if s.numel() == 0 or float(s.max()) == 0.0:
        return 0
    return int((s > s.max() * max(shape) * eps).sum())


def summary() -> dict[str, Any]:
    """The conventions as a JSON-safe dict (recorded in analyses and reports)."""
    return {
        "near_one": list(NEAR_ONE), "gap_min": GAP_MIN, "threshold_rtol": THRESHOLD_RTOL,
        "top_singular_values": TOP_SINGULAR_VALUES,
        "middle_layers": "L/4 < l <= 3L/4", "interior_layers": "1 < l < L (all when L < 3)",
        "representation": "a_l = sigma(z_l) for l < L, f(x) for l = L; spectra of the "
                          "centered [N, n_l] matrix",
        "rank_methods": {
            "numerical": "#{s_i > s_1 max(shape) eps}",
            "threshold": f"#{{s_i > {THRESHOLD_RTOL:g} s_1}}",
            "participation": "(sum s^2)^2 / sum s^4",
            "entropy": "exp(H(s / sum s))",
        },
    }


#: a representation is "approximately k-dimensional" when at most this share of its centered
#: energy lies outside its top-k principal subspace (docs/theory.md#claim-representation-rank)
ENERGY_TOL: float = 0.01


def energy_rank(S: Any, tol: float = ENERGY_TOL) -> int:
    r"""Smallest ``k`` with :math:`\sum_{i>k} s_i^2 \le \mathrm{tol} \sum_i s_i^2`: the
    dimension of the principal subspace that holds all but ``tol`` of the energy of a centered
    representation with singular values ``S`` (0 for ``S = 0``). Its ``k``-th direction is
    never negligible (a smaller ``k`` would leave more than ``tol`` outside)."""
    if not (isinstance(tol, int | float) and 0 <= tol < 1):
        raise ConfigError(f"tol must be a number in [0, 1), got {tol!r}")
    s2 = as_spectrum(S) ** 2  # validated, descending
    total = float(s2.sum())
    if total == 0.0:
        return 0
    outside = total - np.cumsum(s2)  # energy outside the top-k, k = 1..n
    return int(np.argmax(outside <= tol * total * (1 + 1e-12)) + 1)


#: the rules of :func:`bottleneck_rank`, in the order they are tried
BOTTLENECK_RANK_METHODS = ("weight-gap-min", "weight-gap-mode", "jacobian-rank")


def skip_reason(s: np.ndarray) -> str:
    """Why a layer with spectrum ``s`` is left out of spectral ranks (``""``: it is not)."""
    if s.size < 2:
        return "min(n_out, n_in) < 2"
    if float(s[0]) == 0.0:
        return "zero weights"
    return ""


def _clear_gaps(spectra: list[np.ndarray]) -> dict[int, int]:
    """1-based interior layer -> its gap rank, for the layers whose gap is clear."""
    interior = set(interior_layers(len(spectra)))
    clear: dict[int, int] = {}
    for l, s in enumerate(spectra, start=1):
        if l in interior and not skip_reason(s):
            g, ratio = gap_rank(s)
            if ratio >= GAP_MIN:
                clear[l] = g
    return clear


def bottleneck_rank(weight_spectra: Any, *, jacobian_rank: int | None = None
                    ) -> tuple[int, str]:
    """The bottleneck rank ``k`` read from the singular values of ``W_1 .. W_L`` (module
    docstring: the one definition).

    Args:
        weight_spectra: ``L`` spectra (1-d arrays or tensors, any order; the spectrum of
            ``W_l`` has ``min(n_l, n_{l-1})`` values).
        jacobian_rank: the largest numerical rank of ``Jf(x)`` over the points; used only
            when no layer has a clear gap (then it is required).

    Returns ``(k, method)``: ``method`` starts with one of :data:`BOTTLENECK_RANK_METHODS`,
    followed by ``": "`` and how ``k`` was read.
    """
    from collections import Counter

    spectra = [as_spectrum(s) for s in weight_spectra]
    if not spectra:
        raise ConfigError("bottleneck_rank needs at least one weight spectrum")
    cap = min(s.size for s in spectra)
    clear = _clear_gaps(spectra)
    paired = [g for l, g in clear.items() if clear.get(l + 1) == g]
    if paired:
        return min(min(paired), cap), (
            "weight-gap-min: smallest position of the largest gap s_i/s_(i+1) of W "
            f"(clear: >= {GAP_MIN:g}) shared by two consecutive interior layers")
    if clear:
        counts = Counter(clear.values())
        top = max(counts.values())
        return min(min(c for c, n in counts.items() if n == top), cap), (
            "weight-gap-mode: most common position of the largest gap s_i/s_(i+1) of "
            f"W over interior layers with a clear gap (>= {GAP_MIN:g})")
    if jacobian_rank is None:
        raise DataError("no layer has a clear singular-value gap: pass jacobian_rank (the "
                        "largest numerical rank of Jf(x) over the points) to fall back on it")
    return int(jacobian_rank), ("jacobian-rank: no layer has a clear singular-value gap; "
                                "largest numerical rank of Jf(x) over the points")


#: the stable Cost of Identity (:func:`bnstruct.diagnostics.cost_of_identity`) solves with
#: :math:`K + \gamma I`, :math:`\gamma = \gamma_0 \|K\|_{op}`: the default relative ridge of
#: every leaky-ResNet column of ``analyze``: directions of :math:`\sigma(A)` with singular
#: values below :math:`\sqrt{\gamma_0}\, s_1 = 10^{-2} s_1` are damped. Chosen on trained
#: nets (docs/theory.md#leaky-resnets): the exact pseudo-inverse (``gamma0 = 0``) and
#: ``1e-6`` count the float32 noise directions of a rank-3 representation (COI near the width)
COI_GAMMA0: float = 1e-4
