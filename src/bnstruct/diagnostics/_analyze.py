r"""``analyze``: every diagnostic of one network gathered into a per-layer table and a summary.

Conventions (also returned in ``summary["thresholds"]`` / ``summary["conventions"]``):

- Layer ``l = 1..L`` is the weight matrix ``W_l`` (``[n_l, n_{l-1}]``) and its representation
  :math:`a_\ell = \sigma(z_\ell)` (``l < L``) or ``f(x)`` (``l = L``), as returned by
  :func:`~bnstruct.representations`.
- Representation spectra are the singular values of the **centered** matrix
  :math:`A_\ell - \mathbf 1 \bar a_\ell^T` (``[N, n_l]``, mean over the points): the dimension
  of the cloud of points, not its offset. The numerical rank uses numpy's rule
  ``s_i > s_1 max(N, n_l) eps`` with ``eps`` of the model's dtype (hooks run in it).
- A singular value is **near 1** when it lies in :data:`bnstruct.conventions.NEAR_ONE`
  (``[0.5, 2]``); ``middle`` marks :func:`bnstruct.conventions.middle_layers`.
- A layer has a **clear gap at k** when ``s_k / s_{k+1} >= gap_min`` (2.0); ``gap_rank`` is
  the position ``i`` of the largest ratio ``s_i / s_{i+1}`` of its W among the significant
  values ``s_i >= threshold_rtol * s_1`` (0.1), ``gap_ratio`` that ratio.
- ``threshold`` effective ranks count ``s_i > 0.1 s_1``.
- Layers with ``min(n_l, n_{l-1}) < 2`` or all-zero weights are **skipped** (reason in the
  ``skipped`` column): their spectral ranks are NaN and they never enter the estimates.

Bottleneck rank estimate (``summary["bottleneck_rank_method"]`` names the one used):
``"weight-gap-min"``: the smallest ``gap_rank`` shared by at least two consecutive interior
layers with a clear gap (the narrowest point of the network: ``Rank_BN`` is a minimum over
factorizations, and at finite depth the layers next to the input and output do nonlinear work
in more dimensions), capped at the narrowest width (``Rank_BN <= min(sizes)``); interior means
excluding the first and last layers when ``L >= 3``. If no two consecutive layers agree,
``"weight-gap-mode"``: the most common ``gap_rank`` (ties: smallest) over interior layers with a
clear gap; if no layer has a clear gap, ``"jacobian-rank"``: the largest numerical rank of
``Jf(x)`` over the points.
The bottleneck's layer range is the longest run of consecutive layers with a clear gap at
``k`` (the given ``k``, else the estimate).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..conventions import NEAR_ONE, count_near_one, middle_layers
from ..errors import ConfigError, DataError
from ..models import balancedness
from ._bounds import bottleneck_bound, check_k
from ._chain import check_X, parse_chain
from ._jacobian import jacobian
from ._ntk import ntk as _ntk
from ._ntk import ntk_max_eig
from ._representations import representations
from ._spectra import THRESHOLD_RTOL, effective_rank, numerical_rank

__all__ = ["Analysis", "analyze", "THRESHOLDS", "LAYER_COLUMNS"]

THRESHOLDS: dict[str, float] = {
    "near_one_lo": NEAR_ONE[0],
    "near_one_hi": NEAR_ONE[1],
    "gap_min": 2.0,
    "threshold_rtol": THRESHOLD_RTOL,
    "top_singular_values": 4,
}
_TOP = int(THRESHOLDS["top_singular_values"])

LAYER_COLUMNS = (
    ["layer", "name", "n_out", "n_in", "skipped", "frob2", "bias2"]
    + [f"s{i}" for i in range(1, _TOP + 1)]
    + ["near_one", "s_k1", "gap_rank", "gap_ratio", "clear_gap_at_k", "stable_rank",
       "w_erank_entropy", "w_erank_participation", "w_erank_threshold",
       "rep_width", "rep_erank_entropy", "rep_erank_participation", "rep_erank_threshold",
       "rep_rank_numerical", "balance", "middle", "in_bottleneck"]
)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray | torch.Tensor):
        return _jsonable(np.asarray(x.detach().cpu() if torch.is_tensor(x) else x).tolist())
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(float(x)) else None
    if x is None or isinstance(x, str):
        return x
    if pd.isna(x):
        return None
    return str(x)


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
        """JSON-safe dict (``json.dumps`` works): ``summary``, ``layers`` (records),
        ``weight_spectra``, ``rep_spectra``. Non-finite numbers (NaN, +-inf) become ``None``.
        """
        return _jsonable({
            "summary": self.summary,
            "layers": self.layers.to_dict(orient="records"),
            "weight_spectra": self.weight_spectra,
            "rep_spectra": self.rep_spectra,
        })

    def plot(self, path: Any = None, *, color: Any = None, color_label: str = "") -> Any:
        """The paper's figures for this network (see :func:`bnstruct.diagnostics.plot_analysis`);
        returns a ``matplotlib.figure.Figure``, saved to ``path`` when given. ``color``: one
        value per point to colour the bottleneck PCA (e.g. a latent or an invariant)."""
        from ._plots import plot_analysis

        return plot_analysis(self, path, color=color, color_label=color_label)


def _gap(s: np.ndarray, rtol: float) -> tuple[float, float]:
    """(1-based position i of the largest s_i / s_{i+1} with s_i >= rtol s_1, that ratio).

    Restricting to significant ``s_i`` ignores the spread-out small end of a random spectrum
    (the smallest singular values of a square Gaussian matrix are ~1/n of the largest)."""
    tiny = np.finfo(np.float64).tiny
    ls = np.log(np.maximum(s, tiny))
    d = ls[:-1] - ls[1:]
    d[s[:-1] < rtol * s[0]] = -np.inf
    i = int(np.argmax(d))
    return float(i + 1), float(np.exp(d[i]))


def _clear_gap(s: np.ndarray, k: int, gap_min: float) -> bool:
    if k < 1 or k >= len(s):
        return False
    return bool(s[k - 1] >= gap_min * s[k]) and s[k - 1] > 0


def _longest_run(flags: list[bool]) -> tuple[int, int] | None:
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


def analyze(model: nn.Module, X: torch.Tensor, k: int | None = None, *,
            Y: torch.Tensor | None = None, lam: float | None = None, ntk: bool = True,
            hessian: bool = False, lr: float | None = None,
            dtype: torch.dtype = torch.float64) -> Analysis:
    r"""Analyze a network layer by layer on the points ``X`` (``[N, d_in]``).

    Args:
        model: :class:`bnstruct.MLP`, :class:`bnstruct.DeepLinear` or an ``nn.Sequential``
            chain of Linear / ReLU / LeakyReLU / Identity.
        X: points where representations, Jacobians, the bound and the NTK are evaluated.
        k: bottleneck rank used for ``s_{k+1}``, the bound and the layer range; ``None``
            estimates it (module docstring). ``0 <= k <= min(sizes)``.
        Y, lam: targets ``[N, d_out]`` and the penalty weight on :math:`\|\theta\|^2`; give
            both to get ``fit`` and ``objective``; required for ``hessian=True``.
        ntk: compute ``ntk_trace_per_NL`` and ``ntk_max_eig_per_NL`` (Lanczos).
        hessian: compute the top Hessian eigenvalue of
            :math:`\frac1N\sum\|f(x_i)-y_i\|^2 + \lambda\|\theta\|^2` (slower).
        lr: learning rate, only to report ``two_over_lr`` next to the Hessian figure.
        dtype: compute dtype of every measurement except the representations (model dtype).

    ``summary`` keys: ``depth``, ``n_points``, ``sizes``, ``param_norm2``,
    ``param_norm2_per_depth``, ``bottleneck_rank``, ``bottleneck_rank_method``, ``k``,
    ``k_source``, ``bottleneck_layers`` (``[first, last]`` or ``None``),
    ``bottleneck_length``, ``jacobian_rank`` (max over points) and ``jacobian_rank_min``,
    ``log_pdet2_{min,median,max}`` (:math:`2\log|Jf(x)|_k`), ``bound_c1``, ``bound_lhs``,
    ``bound_slack_min`` (worst slack) and ``bound_slack_median``, ``balancedness_max``,
    ``ntk_trace_per_NL`` (:math:`\sum_i \mathrm{tr}\,\Theta(x_i,x_i) / (NL)`),
    ``ntk_max_eig``, ``ntk_max_eig_per_NL``, ``pca_layer``, and when asked ``fit``,
    ``objective``, ``hessian_max_eig``, ``two_over_lr``; ``thresholds``, ``conventions``.
    """
    chain = parse_chain(model, dtype)
    X = check_X(X, chain.d_in, chain.dtype, chain.weights[0].device)
    if k is not None:
        check_k(k, chain)
    if hessian and (Y is None or lam is None):
        raise ConfigError("hessian=True needs the targets Y and the penalty lam")
    if lam is not None and not (isinstance(lam, int | float) and lam >= 0):
        raise ConfigError(f"lam must be a number >= 0, got {lam!r}")
    N, L = X.shape[0], chain.depth
    gap_min = THRESHOLDS["gap_min"]
    rtol = THRESHOLDS["threshold_rtol"]

    bad = [name for name, W, b in zip(chain.names, chain.weights, chain.biases, strict=True)
           if not all(bool(torch.isfinite(t).all()) for t in (W, b) if t is not None)]
    if bad:
        raise DataError(f"the model has non-finite parameters in {', '.join(bad)} (a diverged "
                        "run?): there is nothing to analyze")
    # weights
    w_spec = [torch.linalg.svdvals(W).cpu().numpy() for W in chain.weights]
    # representations (hooks, model dtype), centered
    reps = representations(model, X)
    over = [l for l, A in enumerate(reps, start=1) if not bool(torch.isfinite(A).all())]
    if over:
        raise DataError(f"the forward pass overflows {chain.model_dtype} at layer {over[0]} "
                        "(a diverged run?): analyze a float64 copy, model.double(), or a run "
                        "that converged")
    eps_model = torch.finfo(chain.model_dtype).eps
    r_spec, centered = [], []
    for A in reps:
        C = A.to(torch.float64)
        C = C - C.mean(0, keepdim=True)
        centered.append(C)
        r_spec.append(torch.linalg.svdvals(C).cpu().numpy())
    # Jacobian ranks
    J = jacobian(model, X, dtype=dtype)
    sJ = torch.linalg.svdvals(J).cpu().numpy()
    jranks = np.array([numerical_rank(s, tuple(J.shape[1:]), torch.finfo(J.dtype).eps)
                       for s in sJ])

    mids = set(middle_layers(L))
    rows: list[dict[str, Any]] = []
    for l in range(1, L + 1):
        W, b, s = chain.weights[l - 1], chain.biases[l - 1], w_spec[l - 1]
        n_out, n_in = W.shape
        skipped = ("min(n_out, n_in) < 2" if min(n_out, n_in) < 2
                   else "zero weights" if float(s[0]) == 0.0 else "")
        row: dict[str, Any] = {
            "layer": l, "name": chain.names[l - 1], "n_out": n_out, "n_in": n_in,
            "skipped": skipped, "frob2": float(W.pow(2).sum()),
            "bias2": float(b.pow(2).sum()) if b is not None else 0.0,
        }
        for i in range(_TOP):
            row[f"s{i + 1}"] = float(s[i]) if i < len(s) else math.nan
        row["near_one"] = count_near_one(s)
        ok = not skipped
        gr, gratio = _gap(s, rtol) if ok else (math.nan, math.nan)
        row.update(gap_rank=gr, gap_ratio=gratio,
                   stable_rank=float((s ** 2).sum() / s[0] ** 2) if ok else math.nan)
        for m in ("entropy", "participation", "threshold"):
            row[f"w_erank_{m}"] = effective_rank(s, m, rtol) if ok else math.nan
        rs = r_spec[l - 1]
        row["rep_width"] = reps[l - 1].shape[1]
        for m in ("entropy", "participation", "threshold"):
            row[f"rep_erank_{m}"] = effective_rank(rs, m, rtol)
        row["rep_rank_numerical"] = numerical_rank(rs, (N, reps[l - 1].shape[1]), eps_model)
        row["middle"] = l in mids
        rows.append(row)
    bal = balancedness(model).cpu().numpy() if L > 1 else np.zeros(0)
    for l, row in enumerate(rows, start=1):
        row["balance"] = float(bal[l - 1]) if l < L else math.nan

    # bottleneck rank estimate
    interior = [r for r in rows if not r["skipped"] and (L < 3 or 1 < r["layer"] < L)]
    clear = [int(r["gap_rank"]) for r in interior if r["gap_ratio"] >= gap_min]
    by_layer = {r["layer"]: int(r["gap_rank"]) for r in interior if r["gap_ratio"] >= gap_min}
    paired = [g for l, g in by_layer.items() if by_layer.get(l + 1) == g]
    if paired:
        k_est = min(min(paired), min(chain.sizes))
        method = ("weight-gap-min: smallest position of the largest gap s_i/s_(i+1) of W "
                  f"(clear: >= {gap_min:g}) shared by two consecutive interior layers")
    elif clear:
        counts = Counter(clear)
        top = max(counts.values())
        k_est = min(min(c for c, n in counts.items() if n == top), min(chain.sizes))
        method = ("weight-gap-mode: most common position of the largest gap s_i/s_(i+1) of "
                  f"W over interior layers with a clear gap (>= {gap_min:g})")
    else:
        k_est = int(jranks.max())
        method = ("jacobian-rank: no layer has a clear singular-value gap; largest numerical "
                  "rank of Jf(x) over the points")
    k_used = k_est if k is None else k
    for row, s in zip(rows, w_spec, strict=True):
        row["s_k1"] = float(s[k_used]) if k_used < len(s) else math.nan
        row["clear_gap_at_k"] = _clear_gap(s, k_used, gap_min)
        row["in_bottleneck"] = bool(row["clear_gap_at_k"] and not row["skipped"])
    run = _longest_run([r["in_bottleneck"] for r in rows])
    layers = pd.DataFrame(rows, columns=LAYER_COLUMNS)

    bound = bottleneck_bound(model, X, k_used, dtype=dtype)
    lp2 = bound["log_pdet2"].to_numpy()
    norm2 = float(bound["param_norm2"].iloc[0])
    summary: dict[str, Any] = {
        "depth": L, "n_points": N, "sizes": chain.sizes, "param_norm2": norm2,
        "param_norm2_per_depth": norm2 / L,
        "bottleneck_rank": k_est, "bottleneck_rank_method": method,
        "k": k_used, "k_source": "estimated" if k is None else "given",
        "bottleneck_layers": None if run is None else [run[0], run[1]],
        "bottleneck_length": 0 if run is None else run[1] - run[0] + 1,
        "jacobian_rank": int(jranks.max()), "jacobian_rank_min": int(jranks.min()),
        **{f"log_pdet2_{key}": v for key, v in _stats(lp2).items()},
        "bound_c1": float(bound["c1"].iloc[0]), "bound_lhs": float(bound["lhs"].iloc[0]),
        "bound_slack_min": float(np.nanmin(bound["slack"])) if bound["slack"].notna().any()
        else math.nan,
        "bound_slack_median": float(np.nanmedian(bound["slack"]))
        if bound["slack"].notna().any() else math.nan,
        "balancedness_max": float(bal.max()) if bal.size else 0.0,
    }
    if ntk:
        tr = _ntk(model, X, mode="trace", dtype=dtype)
        lmax = ntk_max_eig(model, X, dtype=dtype)
        summary.update(ntk_trace_per_NL=float(tr.sum()) / (N * L), ntk_max_eig=lmax,
                       ntk_max_eig_per_NL=lmax / (N * L))
    if Y is not None:
        Yc = check_X(Y, None, chain.dtype, name="Y")
        if Yc.shape != (N, chain.d_out):
            raise DataError(f"Y must have shape [N, d_out] = [{N}, {chain.d_out}], got "
                            f"{tuple(Yc.shape)}")
        with torch.no_grad():
            h = X
            for W, bb, acts in zip(chain.weights, chain.biases, chain.acts, strict=True):
                h = h @ W.T + (bb if bb is not None else 0)
                for act in acts:
                    h = act(h)
        fit = float((h - Yc).pow(2).sum()) / N
        summary["fit"] = fit
        if lam is not None:
            summary.update(lam=float(lam), objective=fit + float(lam) * norm2)
    if hessian:
        from ._hessian import hessian_max_eig

        assert Y is not None and lam is not None
        summary["hessian_max_eig"] = hessian_max_eig(model, X, Y, lam, dtype=dtype)
    if lr is not None:
        summary["two_over_lr"] = 2.0 / lr

    # PCA of the bottleneck layer
    if run is not None:
        pl = (run[0] + run[1]) // 2
    elif L > 1:
        pl = min(range(1, L), key=lambda i: (rows[i - 1]["rep_erank_entropy"], i))
    else:
        pl = 1
    C = centered[pl - 1]
    _, _, Vh = torch.linalg.svd(C, full_matrices=False)
    pca = (C @ Vh[:2].T).cpu().numpy()
    if pca.shape[1] < 2:
        pca = np.concatenate([pca, np.zeros((N, 2 - pca.shape[1]))], axis=1)
    summary["pca_layer"] = pl
    summary["thresholds"] = dict(THRESHOLDS)
    summary["conventions"] = {
        "representation": "a_l = sigma(z_l) for l < L, f(x) for l = L; spectra of the "
                          "centered [N, n_l] matrix",
        "rep_rank_numerical": "numerical rank, s_i > s_1 * max(N, n_l) * eps(model dtype)",
        "jacobian_rank": "numerical rank, s_i > s_1 * max(d_out, d_in) * eps(float64)",
        "objective": "(1/N) sum ||f(x_i) - y_i||^2 + lam ||theta||^2 (biases included)",
    }
    return Analysis(layers, summary, w_spec, r_spec, pca)
