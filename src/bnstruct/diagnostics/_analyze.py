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
from collections.abc import Callable, Sequence
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
    energy_rank,
    gap_rank,
    middle_layers,
    numerical_rank,
)
from ..errors import ConfigError, DataError
from ._bottleneck import estimate_bottleneck_rank, estimate_rep_bottleneck_rank, skip_reason
from ._evaluation import Evaluation, svdvals
from ._stationarity import stationarity_summary

__all__ = ["Analysis", "analyze", "THRESHOLDS", "LAYER_COLUMNS", "LAYER_PRODUCERS",
           "REP_COLUMNS", "THEORY_COLUMNS"]

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
       "rep_rank_numerical", "rep_energy_rank", "balance", "middle", "in_bottleneck"]
)
#: per-layer columns that need a positively homogeneous chain (null for other models)
THEORY_COLUMNS = ("near_one", "s_k1", "clear_gap_at_k", "balance", "in_bottleneck")
#: the representation table of general models: ``rep_*`` on the flattened ``[N, prod(shape)]``
#: view, ``chan_*`` on the per-channel ``[N * spatial, C]`` view of feature maps (NaN for
#: vectors), ``jac_rank`` the max over points of the numerical rank of ``d h_l / d x``
REP_COLUMNS = ["rep", "name", "shape", "rep_width", "rep_erank_entropy",
               "rep_erank_participation", "rep_erank_threshold", "rep_rank_numerical",
               "rep_energy_rank", "chan_width", "chan_erank_participation",
               "chan_rank_numerical", "chan_energy_rank", "jac_rank", "in_bottleneck"]


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
    #: general models: one row per representation point (:data:`REP_COLUMNS`); chains: None
    representations: pd.DataFrame | None = field(default=None, repr=False)
    #: with ``conv_operator=True``: per weight layer, the circular conv operator's singular
    #: values (or why there are none)
    operator_spectra: list[np.ndarray | str] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-safe dict (``json.dumps(..., allow_nan=False)`` works): ``summary``,
        ``layers`` (records), ``weight_spectra``, ``rep_spectra``. Non-finite numbers (NaN,
        +-inf) become ``None``."""
        d: dict[str, Any] = {
            "summary": self.summary,
            "layers": self.layers.to_dict(orient="records"),
            "weight_spectra": self.weight_spectra,
            "rep_spectra": self.rep_spectra,
        }
        if self.representations is not None:
            d["representations"] = self.representations.to_dict(orient="records")
        if self.operator_spectra is not None:
            d["operator_spectra"] = self.operator_spectra
        out: dict[str, Any] = jsonable(d)
        return out

    def __repr__(self) -> str:
        from ._display import analysis_repr

        return analysis_repr(self)

    def _repr_html_(self) -> str:
        from ._display import analysis_html

        return analysis_html(self)

    def plot(self, path: Any = None, *, color: Any = None, color_label: str = "") -> Any:
        """The paper's figures for this network (see :func:`bnstruct.diagnostics.plot_analysis`);
        returns a ``matplotlib.figure.Figure``, saved to ``path`` when given. ``color``: one
        value per point to colour the bottleneck PCA (e.g. a latent or an invariant)."""
        from ._plots import plot_analysis

        return plot_analysis(self._plot_view(), path, color=color, color_label=color_label)

    def _plot_view(self) -> Analysis:
        """General models: the rank panel reads the representation table (``layer`` = its
        index) and the bottleneck range as indices into it."""
        if self.representations is None:
            return self
        reps = self.representations.rename(columns={"rep": "layer"})
        names = list(reps["name"])
        bl = self.summary["bottleneck_layers"]
        summary = {**self.summary, "bottleneck_layers": None if bl is None else
                   [names.index(bl[0]) + 1, names.index(bl[1]) + 1]}
        return Analysis(reps, summary, self.weight_spectra, self.rep_spectra, self.pca)


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
    cols["rep_energy_rank"] = [energy_rank(r) for r in c.r]
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



def _objective_summary(ev: Evaluation, Y: torch.Tensor | None, lam: float | None,
                       lr: float | None, hessian: bool, norm2: float) -> dict[str, Any]:
    """``fit``, ``lam``/``objective``, ``hessian_max_eig`` and ``two_over_lr``, as asked."""
    out: dict[str, Any] = {}
    if Y is not None:
        fit = ev.fit(Y)
        out["fit"] = fit
        if lam is not None:
            out.update(lam=float(lam), objective=fit + float(lam) * norm2)
    if hessian:
        assert Y is not None and lam is not None
        out["hessian_max_eig"] = ev.hessian_max_eig(Y, lam)
    if lr is not None:
        out["two_over_lr"] = 2.0 / lr
    return out

def analyze(model: nn.Module, X: torch.Tensor, k: int | None = None, *,
            Y: torch.Tensor | None = None, lam: float | None = None, ntk: bool = True,
            hessian: bool = False, lr: float | None = None,
            dtype: torch.dtype = torch.float64, implementation: str = "auto",
            output: int | str | Callable[[Any], torch.Tensor] | None = None,
            layers: Sequence[str] | None = None, conv_operator: bool = False,
            jacobian_points: int = 64) -> Analysis:
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
        output: for a model returning a tuple/dict: the index/key (or a callable) of the
            tensor to analyze.
        layers: module names whose outputs are the representations (default: every
            activation module and every block, then ``f(x)``; chains: their layers).
        conv_operator: also the singular values of every stride-1 convolution as a circular
            operator on its input grid (``Analysis.operator_spectra``).
        jacobian_points: general models: points for the input-to-layer Jacobian ranks.

    Any other model than a chain (or ``output``/``layers`` given) is analyzed through
    ``torch.func`` with the model in eval mode (its flags restored): ``layers`` is then one
    row per weight layer (Linear, Conv1d/2d; kernels as ``out x (in/groups * k)``) with the
    theory columns (:data:`THEORY_COLUMNS`) null, ``representations`` one row per
    representation point (:data:`REP_COLUMNS`: the flattened and the per-channel view of
    feature maps, the input-to-layer Jacobian rank), ``summary["theory"]`` says why, the
    bottleneck rank comes from the representations
    (:func:`~bnstruct.diagnostics.estimate_rep_bottleneck_rank`, ``"rep-energy-min"``) and,
    as ``bottleneck_rank_jacobian``, from the input-to-layer Jacobians
    (``"jacobian-layer-min"``), and the bound's keys are ``None``.

    ``summary`` keys: ``depth``, ``n_points``, ``sizes``, ``implementation``,
    ``param_norm2``, ``param_norm2_per_depth``, ``bottleneck_rank``,
    ``bottleneck_rank_method``, ``k``, ``k_source``, ``bottleneck_layers`` (``[first, last]``
    or ``None``), ``bottleneck_length``, ``jacobian_rank`` (max over points) and
    ``jacobian_rank_min``, ``log_pdet2_{min,median,max}`` (:math:`2\log|Jf(x)|_k`),
    ``bound_c1``, ``bound_lhs``, ``bound_slack_min`` (worst slack) and
    ``bound_slack_median``, ``balancedness_max``, ``ntk_trace_per_NL``
    (:math:`\sum_i \mathrm{tr}\,\Theta(x_i,x_i) / (NL)`), ``ntk_max_eig``,
    ``ntk_max_eig_per_NL``, ``pca_layer``, and when asked ``fit``, ``objective``,
    ``hessian_max_eig``, ``two_over_lr``; for a chain with ``Y`` and ``lam`` also ``rel_fit``,
    ``rel_grad``, ``rescaling_grad`` and ``warning``: ``None``, or why the net is not yet a
    near-stationary point of its objective and its numbers should not be trusted
    (:func:`~bnstruct.diagnostics.stationarity`); ``thresholds``, ``conventions``.
    """
    if hessian and (Y is None or lam is None):
        raise ConfigError("hessian=True needs the targets Y and the penalty lam")
    if lam is not None and not (isinstance(lam, int | float) and lam >= 0):
        raise ConfigError(f"lam must be a number >= 0, got {lam!r}")
    if not isinstance(jacobian_points, int) or jacobian_points < 1:
        raise ConfigError(f"jacobian_points must be an integer >= 1, got {jacobian_points!r}")
    ev = Evaluation(model, X, dtype=dtype, implementation=implementation, output=output,
                    layers=layers)
    if not ev.is_chain:
        return _analyze_general(ev, k, Y=Y, lam=lam, ntk=ntk, hessian=hessian, lr=lr,
                                conv_operator=conv_operator, jacobian_points=jacobian_points)
    chain = ev.require_chain()
    if k is not None:
        ev.check_k(k)
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
    summary.update(_objective_summary(ev, Y, lam, lr, hessian, norm2))
    summary.update(stationarity_summary(model, X, Y, lam))
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
    ops = _operator_spectra(ev) if conv_operator else None
    return Analysis(layers, summary, w, c.r, pca, None, ops)


def _operator_spectra(ev: Evaluation) -> list[np.ndarray | str]:
    if ev.is_chain:
        return ["not a convolution"] * len(ev.weights)
    return [o if isinstance(o, str) else o.cpu().numpy() for o in ev.conv_operator_spectra()]


def _rep_rows(ev: Evaluation, jacobian_points: int) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """One row per representation point (:data:`REP_COLUMNS`) and the flat spectra."""
    eps_model = torch.finfo(ev.model_dtype).eps
    N = ev.n_points
    jr = ev.layer_jacobian_ranks(jacobian_points)
    rows, spectra = [], []
    for i, (name, A) in enumerate(zip(ev.rep_names, ev.representations(), strict=True)):
        flat = A.reshape(N, -1)
        s = ev.rep_spectra[i].cpu().numpy()
        spectra.append(s)
        row: dict[str, Any] = {"rep": i + 1, "name": name, "shape": list(A.shape[1:]),
                               "rep_width": flat.shape[1]}
        for m in _ERANKS:
            row[f"rep_erank_{m}"] = effective_rank(s, m)
        row["rep_rank_numerical"] = numerical_rank(s, tuple(flat.shape), eps_model)
        row["rep_energy_rank"] = energy_rank(s)
        if A.dim() > 2:
            C = A.shape[1]
            ch = A.reshape(N, C, -1).transpose(1, 2).reshape(-1, C)  # [N * spatial, C]
            sc = svdvals(center(ch)).cpu().numpy()
            row.update(chan_width=C, chan_erank_participation=effective_rank(sc, "participation"),
                       chan_rank_numerical=numerical_rank(sc, tuple(ch.shape), eps_model),
                       chan_energy_rank=energy_rank(sc))
        else:
            row.update(chan_width=math.nan, chan_erank_participation=math.nan,
                       chan_rank_numerical=math.nan, chan_energy_rank=math.nan)
        row["jac_rank"] = int(jr[i])
        rows.append(row)
    return pd.DataFrame(rows, columns=[c for c in REP_COLUMNS if c != "in_bottleneck"]), spectra


def _analyze_general(ev: Evaluation, k: int | None, *, Y: torch.Tensor | None,
                     lam: float | None, ntk: bool, hessian: bool, lr: float | None,
                     conv_operator: bool, jacobian_points: int) -> Analysis:
    """:func:`analyze` of a model that is not a chain (the ``torch.func`` path)."""
    N = ev.n_points
    reason = ("theory columns (near_one, s_k1, clear_gap_at_k, in_bottleneck, balance) and the "
              "bottleneck inequality need a positively homogeneous chain of Linear layers; "
              f"this model is not one ({ev.chain_reason})")
    J = ev.jacobian
    kmax = min(J.shape[1], J.shape[2])
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= kmax):
        raise ConfigError(f"k must be an integer with 0 <= k <= min(d_out, d_in) = {kmax}, "
                          f"got {k!r}")
    bad = [n for n, W in zip(ev.weight_names, ev.weights, strict=True)
           if not bool(torch.isfinite(W).all())]
    if bad:
        raise DataError(f"the model has non-finite parameters in {', '.join(bad)} (a diverged "
                        "run?): there is nothing to analyze")
    reps, r_spec = _rep_rows(ev, jacobian_points)
    k_rep, method, run = estimate_rep_bottleneck_rank(r_spec)
    hidden_j = reps["jac_rank"].to_numpy()[:-1] if len(reps) > 1 else reps["jac_rank"].to_numpy()
    k_jac = int(hidden_j.min())
    k_used = min(k_rep, kmax) if k is None else k
    dims = reps["rep_energy_rank"].to_numpy()
    nh = max(len(reps) - 1, 1)
    reps["in_bottleneck"] = [bool(run is not None and run[0] <= i + 1 <= run[1] and i < nh)
                             for i in range(len(reps))]
    # weight layers: descriptive spectral columns; theory columns null
    w = [s.cpu().numpy() for s in ev.weight_spectra]
    skipped = [skip_reason(s) for s in w]
    rows = []
    L = len(w)
    mids = set(middle_layers(L)) if L else set()
    mods = dict(ev.model.named_modules())
    for l, (name, W, s, sk) in enumerate(zip(ev.weight_names, ev.weights, w, skipped,
                                             strict=True), start=1):
        b = getattr(mods[name], "bias", None)
        row: dict[str, Any] = {"layer": l, "name": name, "n_out": W.shape[0], "n_in": W.shape[1],
                               "skipped": sk, "frob2": float(W.pow(2).sum()),
                               "bias2": float(b.detach().double().pow(2).sum())
                               if b is not None else 0.0}
        for i in range(_TOP):
            row[f"s{i + 1}"] = float(s[i]) if i < len(s) else math.nan
        g, ratio = gap_rank(s) if not sk else (math.nan, math.nan)
        row.update(gap_rank=float(g), gap_ratio=float(ratio),
                   stable_rank=float((s ** 2).sum() / s[0] ** 2) if not sk else math.nan)
        for m in _ERANKS:
            row[f"w_erank_{m}"] = effective_rank(s, m) if not sk else math.nan
        for c in ("rep_width", "rep_erank_entropy", "rep_erank_participation",
                  "rep_erank_threshold", "rep_rank_numerical", "rep_energy_rank"):
            row[c] = math.nan  # representations: see Analysis.representations
        row.update({c: None for c in THEORY_COLUMNS})
        row["middle"] = l in mids
        rows.append(row)
    layers = pd.DataFrame(rows, columns=LAYER_COLUMNS)
    sJ = ev.jacobian_svals
    jranks = ev.jacobian_ranks
    lp2 = (2 * ev.log_pdet(k_used)).cpu().numpy()
    n_params = sum(p.numel() for p in ev.model.parameters())
    norm2 = float(sum(float(p.detach().double().pow(2).sum()) for p in ev.model.parameters()))
    nm = list(reps["name"])
    summary: dict[str, Any] = {
        "model": type(ev.model).__name__, "depth": L, "n_points": N,
        "n_representations": len(reps), "n_params": n_params,
        "implementation": ev.implementation, "theory": reason,
        "param_norm2": norm2, "param_norm2_per_depth": norm2 / L if L else math.nan,
        "bottleneck_rank": k_rep, "bottleneck_rank_method": method,
        "bottleneck_rank_jacobian": k_jac,
        "bottleneck_rank_jacobian_method": (
            "jacobian-layer-min: smallest over hidden representations of the max over the "
            f"first {min(jacobian_points, N)} points of the numerical rank of d h_l / d x"),
        "k": k_used, "k_source": "estimated" if k is None else "given",
        "bottleneck_layers": None if run is None else [nm[run[0] - 1], nm[run[1] - 1]],
        "bottleneck_length": 0 if run is None else run[1] - run[0] + 1,
        "jacobian_rank": int(jranks.max()), "jacobian_rank_min": int(jranks.min()),
        **{f"log_pdet2_{key}": v for key, v in _stats(lp2).items()},
        "bound_c1": None, "bound_lhs": None, "bound_slack_min": None,
        "bound_slack_median": None, "balancedness_max": None,
    }
    del sJ, dims
    if ntk:
        lmax = ev.ntk_max_eig()
        summary.update(ntk_trace_per_NL=float(ev.ntk("trace").sum()) / (N * max(L, 1)),
                       ntk_trace_method=ev.functional.trace_method,
                       ntk_max_eig=lmax, ntk_max_eig_per_NL=lmax / (N * max(L, 1)),
                       ntk_max_eig_method="Lanczos on NTK-vector products J (J^T v) "
                                          "(vjp then jvp), never the Jacobian")
    summary.update(_objective_summary(ev, Y, lam, lr, hessian, norm2))
    # PCA of the bottleneck representation (the middle of the run, else the narrowest)
    if run is not None:
        pi = (run[0] + run[1]) // 2
    else:
        pi = int(np.argmin(reps["rep_erank_entropy"].to_numpy()[:nh])) + 1
    C = center(ev.representations()[pi - 1].reshape(N, -1))
    _, _, Vh = torch.linalg.svd(C, full_matrices=False)
    pca = (C @ Vh[:2].T).cpu().numpy()
    if pca.shape[1] < 2:
        pca = np.concatenate([pca, np.zeros((N, 2 - pca.shape[1]))], axis=1)
    summary["pca_layer"] = nm[pi - 1]
    summary["thresholds"] = {**THRESHOLDS, "energy_tol": conventions.ENERGY_TOL}
    summary["conventions"] = {
        **conventions.summary(),
        "compute_dtype": str(ev.dtype).replace("torch.", ""),
        "mode": "model.eval() during the measurements; the user's train/eval flags restored",
        "representations": "outputs of every activation module and every block (or the "
                           "given layers), then f(x); rep_* on the flattened [N, prod(shape)]"
                           " view, chan_* on the per-channel [N * spatial, C] view",
        "weights": "Linear [out, in]; Conv kernels [out, in/groups, *k] as out x (in/groups*k)",
        "rep_rank_numerical": "numerical rank, s_i > s_1 * max(shape) * eps(model dtype "
                              f"{str(ev.model_dtype).replace('torch.', '')})",
        "jacobian_rank": "numerical rank of Jf(x) (input dims flattened), eps(compute dtype)",
        "objective": "(1/N) sum ||f(x_i) - y_i||^2 + lam ||theta||^2 (all parameters)",
    }
    ops = _operator_spectra(ev) if conv_operator else None
    return Analysis(layers, summary, w, r_spec, pca, reps, ops)
