r"""The summary of :func:`~bnstruct.analyze`: a typed dict of scalars, built by producers of
one :class:`~bnstruct.diagnostics._producers.Context` (the same for every model; the bound
and balancedness only for chains, ``None`` elsewhere)."""

from __future__ import annotations

import math
from typing import Any, TypedDict

import numpy as np
import pandas as pd
import torch

from .. import conventions
from ..conventions import GAP_MIN, NEAR_ONE, THRESHOLD_RTOL, TOP_SINGULAR_VALUES, center
from ._evaluation import Evaluation
from ._producers import Context

__all__ = ["Summary", "THRESHOLDS", "bound_summary", "ntk_summary", "objective_summary",
           "pca", "conventions_summary"]

THRESHOLDS: dict[str, float] = {
    "near_one_lo": NEAR_ONE[0],
    "near_one_hi": NEAR_ONE[1],
    "gap_min": GAP_MIN,
    "threshold_rtol": THRESHOLD_RTOL,
    "top_singular_values": TOP_SINGULAR_VALUES,
}


class Summary(TypedDict, total=False):
    """``Analysis.summary``: every key :func:`~bnstruct.analyze` documents (models that are
    not chains add ``model``, ``n_representations``, ``n_params``, ``theory`` and the NTK
    method names; their bound and balancedness keys are ``None``)."""

    model: str
    depth: int
    n_points: int
    n_representations: int
    n_params: int
    sizes: list[int]
    implementation: str
    theory: str
    param_norm2: float
    param_norm2_per_depth: float
    bottleneck_rank: int
    bottleneck_rank_method: str
    k: int
    k_source: str
    bottleneck_layers: list[Any] | None
    bottleneck_length: int
    jacobian_rank: int
    jacobian_rank_min: int
    log_pdet2_min: float
    log_pdet2_median: float
    log_pdet2_max: float
    bound_c1: float | None
    bound_lhs: float | None
    bound_slack_min: float | None
    bound_slack_median: float | None
    balancedness_max: float | None
    ntk_trace_per_NL: float
    ntk_trace_method: str
    ntk_max_eig: float
    ntk_max_eig_per_NL: float
    ntk_max_eig_method: str
    fit: float
    lam: float
    objective: float
    hessian_max_eig: float
    hvp_method: str
    two_over_lr: float
    pca_layer: Any
    thresholds: dict[str, float]
    conventions: dict[str, Any]
    rel_fit: float
    rel_grad: float
    rescaling_grad: float | None
    warning: str | None
    run: str
    task_bn_rank: int | None
    model_spec: str


def _stats(v: np.ndarray) -> dict[str, float]:
    return {"min": float(np.min(v)), "median": float(np.median(v)), "max": float(np.max(v))}


def bound_summary(ev: Evaluation, k: int, bound: pd.DataFrame | None) -> dict[str, Any]:
    """``log_pdet2_*`` (:math:`2\\log|Jf(x)|_k` over the points) and, from the bound table
    (chains), ``bound_*`` and ``balancedness_max`` (``None`` without a chain)."""
    if bound is None:
        lp2 = (2 * ev.log_pdet(k)).cpu().numpy()
        return {**{f"log_pdet2_{key}": v for key, v in _stats(lp2).items()},
                "bound_c1": None, "bound_lhs": None, "bound_slack_min": None,
                "bound_slack_median": None, "balancedness_max": None}
    slack = bound["slack"]
    ok = bool(slack.notna().any())
    bal = ev.balance
    return {
        **{f"log_pdet2_{key}": v for key, v in _stats(bound["log_pdet2"].to_numpy()).items()},
        "bound_c1": float(bound["c1"].iloc[0]), "bound_lhs": float(bound["lhs"].iloc[0]),
        "bound_slack_min": float(np.nanmin(slack)) if ok else math.nan,
        "bound_slack_median": float(np.nanmedian(slack)) if ok else math.nan,
        "balancedness_max": float(bal.max()) if bal.numel() else 0.0,
    }


def ntk_summary(ev: Evaluation, L: int) -> dict[str, Any]:
    """``ntk_trace_per_NL`` and ``ntk_max_eig(_per_NL)`` (Lanczos on NTK-vector products)."""
    N, L = ev.n_points, max(L, 1)
    lmax = ev.ntk_max_eig()
    out: dict[str, Any] = {"ntk_trace_per_NL": float(ev.ntk("trace").sum()) / (N * L)}
    if not ev.is_chain:
        out["ntk_trace_method"] = ev.functional.trace_method
    out.update(ntk_max_eig=lmax, ntk_max_eig_per_NL=lmax / (N * L))
    if not ev.is_chain:
        out["ntk_max_eig_method"] = ("Lanczos on NTK-vector products J (J^T v) (vjp then "
                                     "jvp), never the Jacobian")
    return out


def objective_summary(ev: Evaluation, Y: torch.Tensor | None, lam: float | None,
                      lr: float | None, hessian: bool) -> dict[str, Any]:
    """``fit``, ``lam``/``objective``, ``hessian_max_eig`` (and the ``hvp_method`` that
    computed it) and ``two_over_lr``, as asked."""
    out: dict[str, Any] = {}
    if Y is not None:
        fit = ev.fit(Y)
        out["fit"] = fit
        if lam is not None:
            out.update(lam=float(lam), objective=fit + float(lam) * ev.param_norm2)
    if hessian and Y is not None and lam is not None:
        out["hessian_max_eig"] = ev.hessian_max_eig(Y, lam)
        out["hvp_method"] = ev.hvp_method
    if lr is not None:
        out["two_over_lr"] = 2.0 / lr
    return out


def pca(c: Context, run: tuple[int, int] | None, entropy: list[float]) -> tuple[int, np.ndarray]:
    """The bottleneck representation (1-based; the middle of the run, else the hidden one of
    smallest entropy rank) and the points in its top two principal directions, ``[N, 2]``."""
    reps = c.ev.representations()
    n_hidden = len(reps) - 1
    if run is not None:
        pl = (run[0] + run[1]) // 2
    elif n_hidden >= 1:
        pl = min(range(1, n_hidden + 1), key=lambda i: (entropy[i - 1], i))
    else:
        pl = 1
    N = c.ev.n_points
    C = center(reps[pl - 1].reshape(N, -1))
    _, _, Vh = torch.linalg.svd(C, full_matrices=False)
    coords = (C @ Vh[:2].T).cpu().numpy()
    if coords.shape[1] < 2:
        coords = np.concatenate([coords, np.zeros((N, 2 - coords.shape[1]))], axis=1)
    return pl, coords


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def conventions_summary(ev: Evaluation) -> dict[str, Any]:
    """``summary["conventions"]``: the package's conventions and this path's own."""
    base = {**conventions.summary(), "compute_dtype": _dtype_name(ev.dtype),
            "bottleneck_rank": "conventions.bottleneck_rank: weight-gap-min, else "
                               "weight-gap-mode, else jacobian-rank (the one definition)"}
    if ev.is_chain:
        return {**base,
                "rep_rank_numerical": "numerical rank, s_i > s_1 * max(N, n_l) * eps(model "
                                      f"dtype {_dtype_name(ev.model_dtype)}); spectra computed "
                                      "in the compute dtype",
                "jacobian_rank": "numerical rank, s_i > s_1 * max(d_out, d_in) * eps(compute "
                                 "dtype)",
                "objective": "(1/N) sum ||f(x_i) - y_i||^2 + lam ||theta||^2 (biases included)"}
    return {
        **base,
        "mode": "model.eval() during the measurements; the user's train/eval flags restored",
        "representations": "outputs of every activation module and every block (or the "
                           "given layers), then f(x); rep_* on the flattened [N, prod(shape)]"
                           " view, chan_* on the per-channel [N * spatial, C] view",
        "weights": "Linear [out, in]; Conv kernels [out, in/groups, *k] as out x (in/groups*k)",
        "rep_rank_numerical": "numerical rank, s_i > s_1 * max(shape) * eps(model dtype "
                              f"{_dtype_name(ev.model_dtype)})",
        "jacobian_rank": "numerical rank of Jf(x) (input dims flattened), eps(compute dtype)",
        "objective": "(1/N) sum ||f(x_i) - y_i||^2 + lam ||theta||^2 (all parameters)",
        "in_bottleneck": "a hidden representation with rep_energy_rank <= k",
    }
