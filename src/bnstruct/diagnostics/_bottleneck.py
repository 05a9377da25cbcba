r"""The bottleneck-rank estimate of a trained chain from its weight spectra.

:func:`estimate_bottleneck_rank` reads the rank ``k`` the way the theory predicts it shows
(docs/theory.md, sections 4-5 and 8): most weight matrices have ``k`` singular values near 1
and the rest small, so the spectrum of ``W_l`` has its largest gap after ``s_k``. Three
methods, tried in order, the one used is returned with its description:

- ``"weight-gap-min"``: the smallest :func:`~bnstruct.conventions.gap_rank` shared by at least
  two consecutive interior layers (:func:`~bnstruct.conventions.interior_layers`) whose gap is
  clear (``s_i / s_{i+1} >= GAP_MIN``). The narrowest consistent point of the network:
  ``Rank_BN`` is a minimum over factorizations, and at finite depth the layers next to the
  input and output do nonlinear work in more dimensions.
- ``"weight-gap-mode"``: if no two consecutive layers agree, the most common gap rank over
  interior layers with a clear gap (ties: the smallest).
- ``"jacobian-rank"``: if no layer has a clear gap, the largest numerical rank of ``Jf(x)``
  over the points (``jacobian_rank``, required in that case).

Both gap estimates are capped at the narrowest width, ``min(sizes) = min_l min(n_l, n_{l-1})``
(``Rank_BN <= min(sizes)``). Layers with fewer than two singular values or ``s_1 = 0`` are
*skipped* (:func:`skip_reason`) and never enter the estimate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..conventions import GAP_MIN, as_spectrum, gap_rank, interior_layers
from ..errors import ConfigError, DataError

__all__ = ["estimate_bottleneck_rank", "estimate_rep_bottleneck_rank", "skip_reason",
           "BOTTLENECK_RANK_METHODS"]

BOTTLENECK_RANK_METHODS = ("weight-gap-min", "weight-gap-mode", "jacobian-rank", "rep-energy-min",
                           "jacobian-layer-min")


def skip_reason(s: np.ndarray) -> str:
    """Why a layer with spectrum ``s`` is left out of spectral ranks (``""``: it is not)."""
    if s.size < 2:
        return "min(n_out, n_in) < 2"
    if float(s[0]) == 0.0:
        return "zero weights"
    return ""


def estimate_bottleneck_rank(weight_spectra: Sequence[Any], *,
                             jacobian_rank: int | None = None) -> tuple[int, str]:
    """Estimate ``Rank_BN`` from the singular values of ``W_1 .. W_L`` (module docstring).

    Args:
        weight_spectra: ``L`` spectra (1-d arrays or tensors, any order; the spectrum of
            ``W_l`` has ``min(n_l, n_{l-1})`` values).
        jacobian_rank: the largest numerical rank of ``Jf(x)`` over the points; used only
            when no layer has a clear gap (then it is required).

    Returns ``(k, method)``: ``method`` starts with one of :data:`BOTTLENECK_RANK_METHODS`,
    followed by ``": "`` and how ``k`` was read.
    """
    spectra = [as_spectrum(s) for s in weight_spectra]
    L = len(spectra)
    if L == 0:
        raise ConfigError("estimate_bottleneck_rank needs at least one weight spectrum")
    cap = min(s.size for s in spectra)
    interior = set(interior_layers(L))
    clear: dict[int, int] = {}
    for l, s in enumerate(spectra, start=1):
        if l in interior and not skip_reason(s):
            g, ratio = gap_rank(s)
            if ratio >= GAP_MIN:
                clear[l] = g
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


def estimate_rep_bottleneck_rank(rep_spectra: Sequence[Any], *, tol: float | None = None
                                 ) -> tuple[int, str, tuple[int, int] | None]:
    """``Rank_BN`` of any model from its representations (the last one is the output).

    Each hidden representation is approximately ``d_l``-dimensional with ``d_l`` its
    :func:`~bnstruct.conventions.energy_rank` (all but ``tol``, default
    :data:`~bnstruct.conventions.ENERGY_TOL`, of its centered energy in ``d_l`` principal
    directions). The estimate is the smallest ``k`` such that a contiguous run of at least two
    hidden representations is approximately ``k``-dimensional (``max(d_l, d_{l+1}) = k``): the
    narrowest consistent point, as for the weights. With a single hidden representation, its
    ``d_l``; with none, the output's. Returns ``(k, method, run)``: ``run`` is the longest run
    (1-based ``(first, last)``) of representations with ``d_l <= k``, ``None`` if none.
    """
    from ..conventions import ENERGY_TOL, energy_rank

    t = ENERGY_TOL if tol is None else tol
    dims = [energy_rank(s, t) for s in rep_spectra]
    if not dims:
        raise ConfigError("estimate_rep_bottleneck_rank needs at least one representation")
    hidden = dims[:-1]
    if len(hidden) >= 2:
        k = min(max(a, b) for a, b in zip(hidden[:-1], hidden[1:], strict=True))
        how = "smallest max(d_l, d_(l+1)) over consecutive hidden representations"
    elif hidden:
        k, how = hidden[0], "the only hidden representation"
    else:
        k, how = dims[-1], "no hidden representation: the output"
    flags = [d <= k for d in hidden] if hidden else [True]
    best: tuple[int, int] | None = None
    start = None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if best is None or i - start > best[1] - best[0] + 1:
                best = (start + 1, i)
            start = None
    return k, (f"rep-energy-min: {how}, d_l = smallest number of principal directions "
               f"holding all but {t:g} of the centered energy"), best
