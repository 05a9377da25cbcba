r"""``analyze``: every diagnostic of one network gathered into a per-layer table and a summary.

Conventions (also returned in ``summary["thresholds"]`` / ``summary["conventions"]``):

- Layer ``l = 1..L`` is the weight matrix ``W_l`` (``[n_l, n_{l-1}]``) and its representation
  :math:`a_\ell = \sigma(z_\ell)` (``l < L``) or ``f(x)`` (``l = L``), as returned by
  :func:`~bnstruct.representations`.
- Representation spectra are the singular values of the **centered** matrix
  :math:`A_\ell - \mathbf 1 \bar a_\ell^T` (``[N, n_l]``, mean over the points): the dimension
  of the cloud of points, not its offset, computed in the compute dtype. The numerical rank
  uses numpy's rule ``s_i > s_1 max(N, n_l) eps`` with ``eps`` of the *model's* dtype (the
  precision its weights are known to).
- A singular value is **near 1** when it lies in :data:`bnstruct.conventions.NEAR_ONE`
  (``[0.5, 2]``); ``middle`` marks :func:`bnstruct.conventions.middle_layers`.
- A layer has a **clear gap at k** when ``s_k / s_{k+1} >= gap_min`` (2.0); ``gap_rank`` is
  the position ``i`` of the largest ratio ``s_i / s_{i+1}`` of its W among the significant
  values ``s_i >= threshold_rtol * s_1`` (0.1), ``gap_ratio`` that ratio.
- ``threshold`` effective ranks count ``s_i > 0.1 s_1``.
- Layers with ``min(n_l, n_{l-1}) < 2`` or all-zero weights are **skipped** (reason in the
  ``skipped`` column): their spectral ranks are NaN and they never enter the estimates.

The bottleneck rank is estimated by :func:`~bnstruct.diagnostics.estimate_bottleneck_rank`
(``summary["bottleneck_rank_method"]`` names the method used). The bottleneck's layer range
is the longest run of consecutive layers with a clear gap at ``k`` (the given ``k``, else the
estimate).

Every number comes from one :class:`~bnstruct.diagnostics.Evaluation` (the model parsed and
cast once, one forward pass, one Jacobian, each SVD once); the table is built by a list of
column producers (:data:`LAYER_PRODUCERS`), each a function of that evaluation, and the
summary likewise. All measurements are in the compute dtype (float64 default), the
representations included; ``summary["implementation"]`` names the Jacobian/NTK path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import conventions
from .._io import jsonable
from ..conventions import (
    GAP_MIN,
    NEAR_ONE,
    THRESHOLD_RTOL,
    TOP_SINGULAR_VALUES,
    center,
    clear_gap,
    count_near_one,
    effective_rank,
    gap_rank,
    middle_layers,
    numerical_rank,
)
from ..errors import ConfigError, DataError
from ._bottleneck import estimate_bottleneck_rank, skip_reason
from ._evaluation import Evaluation

__all__ = ["Analysis", "analyze", "THRESHOLDS", "LAYER_COLUMNS", "LAYER_PRODUCERS"]

THRESHOLDS: dict[str, float] = {
    "near_one_lo": NEAR_ONE[0],
    "near_one_hi": NEAR_ONE[1],
    "gap_min": GAP_MIN,
    "threshold_rtol": THRESHOLD_RTOL,
    "top_singular_values": TOP_SINGULAR_VALUES,
}
_TOP = TOP_SINGULAR_VALUES
_ERANKS = ("entropy", "participation", "threshold")

LAYER_COLUMNS = (
    ["layer", "name", "n_out", "n_in", "skipped", "frob2", "bias2"]
    + [f"s{i}" for i in range(1, _TOP + 1)]
    + ["near_one", "s_k1", "gap_rank", "gap_ratio", "clear_gap_at_k", "stable_rank",
       "w_erank_entropy", "w_erank_participation", "w_erank_threshold",
       "rep_width", "rep_erank_entropy", "rep_erank_participation", "rep_erank_threshold",
       "rep_rank_numerical", "balance", "middle", "in_bottleneck"]
)


@dataclass(frozen=True, eq=False)
class Analysis:
    """Result of :func:`analyze`.

    ``layers``: one row per layer, columns :data:`LAYER_COLUMNS`; ``summary``: scalars (see
    :func:`analyze`); ``weight_spectra[l-1]`` / ``rep_spectra[l-1]``: full singular values of
    ``W_l`` and of the centered representation of layer ``l``; ``pca``: ``[N, 2]`` coordinates
    of the points in the top two principal directions of layer ``summary["pca_layer"]``.
    """

    layers: pd.DataFrame
    summary: dict[str, Any]
    weight_spectra: list[np.ndarray] = field(repr=False)
    rep_spectra: list[np.ndarray] = field(repr=False)
    pca: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-safe dict (``json.dumps(..., allow_nan=False)`` works): ``summary``,
        ``layers`` (records), ``weight_spectra``, ``rep_spectra``. Non-finite numbers (NaN,
        +-inf) become ``None``."""
        out: dict[str, Any] = jsonable({
            "summary": self.summary,
            "layers": self.layers.to_dict(orient="records"),
            "weight_spectra": self.weight_spectra,
            "rep_spectra": self.rep_spectra,
        })
        return out

    def plot(self, path: Any = None, *, color: Any = None, color_label: str = "") -> Any:
        """The paper's figures for this network (see :func:`bnstruct.diagnostics.plot_analysis`);
        returns a ``matplotlib.figure.Figure``, saved to ``path`` when given. ``color``: one
        value per point to colour the bottleneck PCA (e.g. a latent or an invariant)."""
        from ._plots import plot_analysis

        return plot_analysis(self, path, color=color, color_label=color_label)


# --- what the column producers read ------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _Layers:
    """The evaluation and the per-layer spectra (NumPy, computed once) every producer reads."""

    ev: Evaluation
    w: list[np.ndarray]  # singular values of W_l
    r: list[np.ndarray]  # singular values of the centered representation of layer l
    skipped: list[str]

    @property
    def depth(self) -> int:
        return len(self.w)


Columns = dict[str, list[Any]]


def _identity(c: _Layers) -> Columns:
    chain = c.ev.require_chain()
    return {"layer": list(range(1, c.depth + 1)), "name": list(chain.names),
            "n_out": [W.shape[0] for W in chain.weights],
            "n_in": [W.shape[1] for W in chain.weights], "skipped": list(c.skipped)}


def _weights(c: _Layers) -> Columns:
    chain = c.ev.require_chain()
    cols: Columns = {
        "frob2": [float(W.pow(2).sum()) for W in chain.weights],
        "bias2": [float(b.pow(2).sum()) if b is not None else 0.0 for b in chain.biases],
    }
    for i in range(_TOP):
        cols[f"s{i + 1}"] = [float(s[i]) if i < len(s) else math.nan for s in c.w]
    cols["near_one"] = [count_near_one(s) for s in c.w]
    gaps = [gap_rank(s) if not sk else (math.nan, math.nan)
            for s, sk in zip(c.w, c.skipped, strict=True)]
    cols["gap_rank"] = [float(g) for g, _ in gaps]
    cols["gap_ratio"] = [float(r) for _, r in gaps]
    cols["stable_rank"] = [float((s ** 2).sum() / s[0] ** 2) if not sk else math.nan
                           for s, sk in zip(c.w, c.skipped, strict=True)]
    for m in _ERANKS:
        cols[f"w_erank_{m}"] = [effective_rank(s, m) if not sk else math.nan
                                for s, sk in zip(c.w, c.skipped, strict=True)]
    return cols


def _representations(c: _Layers) -> Columns:
    N = c.ev.n_points
    eps_model = torch.finfo(c.ev.model_dtype).eps
    widths = [A.shape[1] for A in c.ev.representations()]
    cols: Columns = {"rep_width": widths}
    for m in _ERANKS:
        cols[f"rep_erank_{m}"] = [effective_rank(r, m) for r in c.r]
    cols["rep_rank_numerical"] = [numerical_rank(r, (N, n), eps_model)
                                  for r, n in zip(c.r, widths, strict=True)]
    return cols


def _balance(c: _Layers) -> Columns:
    bal = c.ev.balance.cpu().numpy()
    return {"balance": [float(bal[l]) if l < c.depth - 1 else math.nan
                        for l in range(c.depth)]}


def _middle(c: _Layers) -> Columns:
    mids = set(middle_layers(c.depth))
    return {"middle": [l in mids for l in range(1, c.depth + 1)]}


#: the per-layer columns that do not depend on ``k``, in order; each reads the evaluation
LAYER_PRODUCERS: tuple[Callable[[_Layers], Columns], ...] = (
    _identity, _weights, _representations, _balance, _middle)


def _bottleneck(c: _Layers, k: int) -> Columns:
    """The ``k``-dependent columns: ``s_{k+1}``, a clear gap at ``k``, in the bottleneck."""
    gap = [clear_gap(s, k) for s in c.w]
    return {"s_k1": [float(s[k]) if k < len(s) else math.nan for s in c.w],
            "clear_gap_at_k": gap,
            "in_bottleneck": [g and not sk for g, sk in zip(gap, c.skipped, strict=True)]}


def _longest_run(flags: list[bool]) -> tuple[int, int] | None:
    """1-based ``(first, last)`` of the longest run of True (the first one on ties)."""
    best, start = None, None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if best is None or i - start > best[1] - best[0] + 1:
                best = (start, i - 1)
            start = None
    return None if best is None else (best[0] + 1, best[1] + 1)


def _stats(v: np.ndarray) -> dict[str, float]:
    return {"min": float(np.min(v)), "median": float(np.median(v)), "max": float(np.max(v))}


# --- summary producers ---------------------------------------------------------------------

def _bound_summary(ev: Evaluation, k: int) -> dict[str, Any]:
    bound = ev.bound(k)
    lp2 = bound["log_pdet2"].to_numpy()
    slack = bound["slack"]
    ok = bool(slack.notna().any())
    return {
        **{f"log_pdet2_{key}": v for key, v in _stats(lp2).items()},
        "bound_c1": float(bound["c1"].iloc[0]), "bound_lhs": float(bound["lhs"].iloc[0]),
        "bound_slack_min": float(np.nanmin(slack)) if ok else math.nan,
        "bound_slack_median": float(np.nanmedian(slack)) if ok else math.nan,
    }


def _ntk_summary(ev: Evaluation, L: int) -> dict[str, Any]:
    N = ev.n_points
    lmax = ev.ntk_max_eig()
    return {"ntk_trace_per_NL": float(ev.ntk("trace").sum()) / (N * L), "ntk_max_eig": lmax,
            "ntk_max_eig_per_NL": lmax / (N * L)}


def _pca(c: _Layers, run: tuple[int, int] | None, erank_entropy: list[float]
         ) -> tuple[int, np.ndarray]:
    """The bottleneck layer (middle of the run; else the interior layer of smallest entropy
    rank) and the points in its top two principal directions, ``[N, 2]``."""
    L, N = c.depth, c.ev.n_points
    if run is not None:
        pl = (run[0] + run[1]) // 2
    elif L > 1:
        pl = min(range(1, L), key=lambda i: (erank_entropy[i - 1], i))
    else:
        pl = 1
    C = center(c.ev.representations()[pl - 1])
    _, _, Vh = torch.linalg.svd(C, full_matrices=False)
    pca = (C @ Vh[:2].T).cpu().numpy()
    if pca.shape[1] < 2:
        pca = np.concatenate([pca, np.zeros((N, 2 - pca.shape[1]))], axis=1)
    return pl, pca


def _check_finite(ev: Evaluation) -> None:
    chain = ev.require_chain()
    bad = [name for name, W, b in zip(chain.names, chain.weights, chain.biases, strict=True)
           if not all(bool(torch.isfinite(t).all()) for t in (W, b) if t is not None)]
    if bad:
        raise DataError(f"the model has non-finite parameters in {', '.join(bad)} (a diverged "
                        "run?): there is nothing to analyze")
    big = torch.finfo(ev.model_dtype).max
    for l, A in enumerate(ev.representations(), start=1):
        if not bool(torch.isfinite(A).all()) or float(A.abs().max()) > big:
            raise DataError(f"the forward pass overflows {ev.model_dtype} at layer {l} "
                            "(a diverged run?): analyze a float64 copy, model.double(), or a "
                            "run that converged")


def analyze(model: nn.Module, X: torch.Tensor, k: int | None = None, *,
            Y: torch.Tensor | None = None, lam: float | None = None, ntk: bool = True,
            hessian: bool = False, lr: float | None = None,
            dtype: torch.dtype = torch.float64, implementation: str = "auto") -> Analysis:
    r"""Analyze a network layer by layer on the points ``X`` (``[N, d_in]``).

    Args:
        model: :class:`bnstruct.MLP`, :class:`bnstruct.DeepLinear` or an ``nn.Sequential``
            chain (nested to any depth) of Linear / ReLU / LeakyReLU / Identity / Dropout.
        X: points where representations, Jacobians, the bound and the NTK are evaluated.
        k: bottleneck rank used for ``s_{k+1}``, the bound and the layer range; ``None``
            estimates it (:func:`~bnstruct.diagnostics.estimate_bottleneck_rank`).
            ``0 <= k <= min(sizes)``.
        Y, lam: targets ``[N, d_out]`` and the penalty weight on :math:`\|\theta\|^2`; give
            both to get ``fit`` and ``objective``; required for ``hessian=True``.
        ntk: compute ``ntk_trace_per_NL`` and ``ntk_max_eig_per_NL`` (Lanczos). With
            ``ntk=False`` analyze is deterministic and costs one forward pass, one Jacobian
            sweep and the SVDs.
        hessian: compute the top Hessian eigenvalue of
            :math:`\frac1N\sum\|f(x_i)-y_i\|^2 + \lambda\|\theta\|^2` (slower).
        lr: learning rate, only to report ``two_over_lr`` next to the Hessian figure.
        dtype: compute dtype of every measurement, the representations included (the
            numerical rank of representations uses ``eps`` of the model's dtype).
        implementation: Jacobian/NTK path, ``"auto"`` | ``"structured"`` | ``"autodiff"``
            (:class:`~bnstruct.diagnostics.Evaluation`); the one used is
            ``summary["implementation"]``.

    ``summary`` keys: ``depth``, ``n_points``, ``sizes``, ``implementation``,
    ``param_norm2``, ``param_norm2_per_depth``, ``bottleneck_rank``,
    ``bottleneck_rank_method``, ``k``, ``k_source``, ``bottleneck_layers`` (``[first, last]``
    or ``None``), ``bottleneck_length``, ``jacobian_rank`` (max over points) and
    ``jacobian_rank_min``, ``log_pdet2_{min,median,max}`` (:math:`2\log|Jf(x)|_k`),
    ``bound_c1``, ``bound_lhs``, ``bound_slack_min`` (worst slack) and
    ``bound_slack_median``, ``balancedness_max``, ``ntk_trace_per_NL``
    (:math:`\sum_i \mathrm{tr}\,\Theta(x_i,x_i) / (NL)`), ``ntk_max_eig``,
    ``ntk_max_eig_per_NL``, ``pca_layer``, and when asked ``fit``, ``objective``,
    ``hessian_max_eig``, ``two_over_lr``; ``thresholds``, ``conventions``.
    """
    ev = Evaluation(model, X, dtype=dtype, implementation=implementation)
    chain = ev.require_chain()
    if k is not None:
        ev.check_k(k)
    if hessian and (Y is None or lam is None):
        raise ConfigError("hessian=True needs the targets Y and the penalty lam")
    if lam is not None and not (isinstance(lam, int | float) and lam >= 0):
        raise ConfigError(f"lam must be a number >= 0, got {lam!r}")
    _check_finite(ev)
    N, L = ev.n_points, chain.depth

    w = [s.cpu().numpy() for s in ev.weight_spectra]
    c = _Layers(ev, w, [s.cpu().numpy() for s in ev.rep_spectra], [skip_reason(s) for s in w])
    cols: Columns = {}
    for produce in LAYER_PRODUCERS:
        cols.update(produce(c))
    jranks = ev.jacobian_ranks
    k_est, method = estimate_bottleneck_rank(w, jacobian_rank=int(jranks.max()))
    k_used = k_est if k is None else k
    cols.update(_bottleneck(c, k_used))
    layers = pd.DataFrame(cols, columns=LAYER_COLUMNS)
    run = _longest_run(cols["in_bottleneck"])

    norm2 = ev.param_norm2
    bal = ev.balance
    summary: dict[str, Any] = {
        "depth": L, "n_points": N, "sizes": chain.sizes, "implementation": ev.implementation,
        "param_norm2": norm2, "param_norm2_per_depth": norm2 / L,
        "bottleneck_rank": k_est, "bottleneck_rank_method": method,
        "k": k_used, "k_source": "estimated" if k is None else "given",
        "bottleneck_layers": None if run is None else [run[0], run[1]],
        "bottleneck_length": 0 if run is None else run[1] - run[0] + 1,
        "jacobian_rank": int(jranks.max()), "jacobian_rank_min": int(jranks.min()),
        **_bound_summary(ev, k_used),
        "balancedness_max": float(bal.max()) if bal.numel() else 0.0,
    }
    if ntk:
        summary.update(_ntk_summary(ev, L))
    if Y is not None:
        fit = ev.fit(Y)
        summary["fit"] = fit
        if lam is not None:
            summary.update(lam=float(lam), objective=fit + float(lam) * norm2)
    if hessian:
        assert Y is not None and lam is not None
        summary["hessian_max_eig"] = ev.hessian_max_eig(Y, lam)
    if lr is not None:
        summary["two_over_lr"] = 2.0 / lr
    pl, pca = _pca(c, run, cols["rep_erank_entropy"])
    summary["pca_layer"] = pl
    summary["thresholds"] = dict(THRESHOLDS)
    summary["conventions"] = {
        **conventions.summary(),
        "compute_dtype": str(ev.dtype).replace("torch.", ""),
        "rep_rank_numerical": "numerical rank, s_i > s_1 * max(N, n_l) * eps(model dtype "
                              f"{str(ev.model_dtype).replace('torch.', '')}); spectra computed "
                              "in the compute dtype",
        "jacobian_rank": "numerical rank, s_i > s_1 * max(d_out, d_in) * eps(compute dtype)",
        "objective": "(1/N) sum ||f(x_i) - y_i||^2 + lam ||theta||^2 (biases included)",
    }
    return Analysis(layers, summary, w, c.r, pca)
