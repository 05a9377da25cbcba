r"""Claim 10 (`representation-convergence`): an O(L) NTK "guarantees infinite depth convergence
of the representations of almost all layers" (docs/theory.md#claim-representation-convergence): as
L grows, consecutive middle-layer representations differ less and less.

Nets: the composite depth sweep of claims 2-5 (:data:`~bnstruct.experiments._sweep.SWEEPS`;
the same run configs, trained once), trained with Adam at the sweep's lr. These are not
large-lr GD solutions: their :math:`\lambda_{max}(\Theta)/(NL)` grows with L (reported per
depth; claim 6 uses this Adam recipe as its *small*-lr arm). So this claim tests the
conclusion on nets whose NTK premise is not established; the convergence it measures holds
for them anyway, and a test on large-lr GD nets (claim 6's, at width 32) is a follow-up.

Per net, for every pair of consecutive middle layers ``l, l+1`` (both in
:func:`~bnstruct.conventions.middle_layers`), :math:`d_\ell = 1 - \mathrm{CKA}(a_\ell,
a_{\ell+1})` with :func:`linear_cka` on the training inputs (float64; ``a_l`` the
post-ReLU representation, :func:`bnstruct.diagnostics.representations`); the net's statistic
is the median of :math:`d_\ell` over those pairs.

Verdict: the log-log OLS slope of the per-net median ``d`` against L over every net (all
depths and seeds) satisfies ``slope + 2 SE < 0``: it falls with L beyond its error bar
(:data:`N_SE`). The per-depth mean +- SE over seeds is reported.

Finding (reported, no verdict): cross-depth similarity at a fixed relative depth ``p``:
CKA between the representation at layer ``round(p L)`` of the net of depth ``L`` and at layer
``round(p L')`` of the same seed's net at the next depth ``L'`` of the sweep, mean +- SE over
seeds, for each ``p`` in :attr:`Config.ps` (``round`` is half-up).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import RunConfig
from ..conventions import middle_layers
from ..errors import ConfigError
from ..store import Run
from ._records import Claim, Kind, Memo, float64_copy, require_status
from ._statistics import fmt_mean_se, loglog_fit
from ._sweep import SWEEPS, SweepConfig, sweep_plan

NAME = "representation-convergence"
KIND: Kind = "claim"
#: "falls with L beyond its error bar": slope + N_SE * SE < 0 (about a one-sided 97.5% level
#: for a normal slope estimate), fixed before any run
N_SE = 2.0

__all__ = ["NAME", "KIND", "N_SE", "Config", "CONFIGS", "Result", "linear_cka", "statement",
           "plan", "measure", "verdict", "figures", "layer_at"]


@dataclass(frozen=True)
class Config:
    sweep: SweepConfig
    #: relative depths of the cross-depth finding
    ps: tuple[float, ...] = (0.25, 0.5, 0.75)


CONFIGS = {mode: Config(SWEEPS[mode]) for mode in ("smoke", "quick", "full")}


def linear_cka(X: Any, Y: Any) -> float:
    r"""Linear CKA of two representations of the same ``N`` points, ``X: [N, p]``,
    ``Y: [N, q]`` (NumPy or torch), computed in float64 on the column-centered
    :math:`X_c, Y_c`:

    .. math::

        \mathrm{CKA}(X, Y) = \frac{\|Y_c^T X_c\|_F^2}{\|X_c^T X_c\|_F \, \|Y_c^T Y_c\|_F}
        \in [0, 1].

    Invariant to orthogonal transforms and isotropic scaling of either side and to adding a
    constant vector to every row; 1 for ``X == Y``. NaN when either side is constant over the
    points (a zero centered representation: CKA is undefined)."""
    def as64(a: Any) -> np.ndarray:
        if torch.is_tensor(a):
            a = a.detach().cpu().numpy()
        a = np.asarray(a, dtype=np.float64)
        return a.reshape(a.shape[0], -1) if a.ndim != 2 else a

    x, y = as64(X), as64(Y)
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"linear_cka needs the same points on both sides: X has {x.shape[0]} "
                          f"rows, Y has {y.shape[0]}")
    xc, yc = x - x.mean(0), y - y.mean(0)
    den = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    if not den > 0:
        return float("nan")
    return float(np.linalg.norm(yc.T @ xc) ** 2 / den)


def layer_at(p: float, L: int) -> int:
    """The hidden layer at relative depth ``p``: ``round(p L)`` (half-up), clipped to
    ``1..L-1``."""
    return int(min(max(math.floor(p * L + 0.5), 1), max(L - 1, 1)))


def statement(cfg: Config) -> str:
    return (f"on {cfg.sweep.describe()}: the median over consecutive middle-layer pairs of "
            "d_l = 1 - CKA(a_l, a_l+1) (linear CKA, centered) falls with depth: its log-log "
            f"slope against L over every net satisfies slope + {N_SE:g} SE < 0 (Adam nets, "
            "whose NTK is not shown to be O(L): the theorem's premise is reported, not "
            "assumed); reported: the nets' ntk_max/(NL) and the CKA between the same seed's "
            "nets of adjacent "
            f"depths at relative depth p = {', '.join(f'{p:g}' for p in cfg.ps)}")


def plan(cfg: Config) -> list[RunConfig]:
    """The sweep's runs (:func:`~bnstruct.experiments._sweep.sweep_plan`)."""
    return sweep_plan(cfg.sweep)


@dataclass(frozen=True)
class Result:
    """``nets``: one row per net (run, depth, seed, median_d, mean_d, max_d, n_pairs,
    ntk_per_NL, rel_fit); ``pairs``: one row per (net, consecutive middle pair) (depth, seed,
    layer = l, d); ``cross``: one row per (seed, p, adjacent depths) (seed, p, depth,
    depth_next, layer, layer_next, cka)."""

    nets: pd.DataFrame
    pairs: pd.DataFrame
    cross: pd.DataFrame


def _ntk_per_NL(run: Run) -> float:
    from ..diagnostics import ntk_max_eig

    X = run.task.X.to(torch.float64)
    return ntk_max_eig(float64_copy(run.model), X) / (X.shape[0] * run.config.model.depth)


def _net(run: Run, ps: tuple[float, ...]) -> tuple[list[float], dict[float, np.ndarray]]:
    """Consecutive middle-layer ``d_l`` (in layer order) and the representations at
    :func:`layer_at` for each ``p`` of one net (float64)."""
    from ..diagnostics import representations

    L = run.config.model.depth
    reps = representations(float64_copy(run.model), run.task.X.to(torch.float64))
    mids = set(middle_layers(L))
    d = [1.0 - linear_cka(reps[l - 1], reps[l]) for l in sorted(mids) if l + 1 in mids]
    at = {p: reps[layer_at(p, L) - 1].numpy() for p in ps}
    return d, at


def measure(cfg: Config, runs: Sequence[Run], *, memo: Memo | None = None) -> Result:
    """Measure every net of the sweep (``runs`` in :func:`plan`'s order). The NTK of a net is
    computed once per ``memo`` (key ``("ntk-max-per-NL", run path)``)."""
    require_status(runs)
    memo = memo if memo is not None else Memo()
    nets, pairs, at = [], [], {}
    for r in runs:
        key = str(r.path.resolve())
        L, seed = r.config.model.depth, r.config.seed
        d, reps = memo.get(("rep-convergence", key, cfg.ps), partial(_net, r, cfg.ps))
        ntk = memo.get(("ntk-max-per-NL", key), partial(_ntk_per_NL, r))
        mids = [l for l in middle_layers(L) if l + 1 in set(middle_layers(L))]
        pairs += [{"depth": L, "seed": seed, "layer": l, "d": v}
                  for l, v in zip(mids, d, strict=True)]
        nets.append({"run": r.path.name, "depth": L, "seed": seed,
                     "median_d": float(np.median(d)) if d else float("nan"),
                     "mean_d": float(np.mean(d)) if d else float("nan"),
                     "max_d": float(np.max(d)) if d else float("nan"), "n_pairs": len(d),
                     "ntk_per_NL": ntk, "rel_fit": r.summary["final"].get("rel_fit")})
        at[(L, seed)] = (reps, r.task.X)
    depths = sorted({L for L, _ in at})
    cross = []
    for L, L2 in zip(depths[:-1], depths[1:], strict=True):
        for seed in sorted({s for (d_, s) in at if d_ == L}):
            if (L2, seed) not in at:
                continue
            (ra, Xa), (rb, Xb) = at[(L, seed)], at[(L2, seed)]
            if not torch.equal(Xa, Xb):
                raise ConfigError(f"nets of depth {L} and {L2} (seed {seed}) were measured on "
                                  "different inputs: cross-depth CKA needs the same points")
            cross += [{"seed": seed, "p": p, "depth": L, "depth_next": L2,
                       "layer": layer_at(p, L), "layer_next": layer_at(p, L2),
                       "cka": linear_cka(ra[p], rb[p])} for p in cfg.ps]
    return Result(pd.DataFrame(nets), pd.DataFrame(pairs), pd.DataFrame(cross))


def verdict(res: Result, cfg: Config) -> Claim:
    nets = res.nets
    slope, se = loglog_fit(nets["depth"], nets["median_d"])
    passed = bool(math.isfinite(slope) and math.isfinite(se) and slope + N_SE * se < 0)
    per_depth = ", ".join(f"L={L}: {fmt_mean_se(g['median_d'])}"
                          for L, g in nets.groupby("depth"))
    ntk = ", ".join(f"L={L}: {fmt_mean_se(g['ntk_per_NL'])}" for L, g in nets.groupby("depth"))
    cross = res.cross
    cross_txt = "; ".join(
        f"p={p:g}: " + ", ".join(f"L={int(L)}->{int(g['depth_next'].iloc[0])} "
                                 f"{fmt_mean_se(g['cka'])}"
                                 for L, g in cp.groupby("depth"))
        for p, cp in cross.groupby("p")) if len(cross) else "none"
    why = ("the slope is not finite (too few depths or a zero dissimilarity)"
           if not (math.isfinite(slope) and math.isfinite(se)) else
           f"the dissimilarity of consecutive middle layers does not fall clearly with depth: "
           f"log-log slope {slope:.2f} ± {se:.2f}, so slope + {N_SE:g} SE = "
           f"{slope + N_SE * se:.2f} is not below 0")
    return Claim(
        NAME, statement(cfg),
        key=(f"slope of 1 - CKA vs L {slope:.2f} ± {se:.2f} (slope + {N_SE:g} SE = "
             f"{slope + N_SE * se:.2f})"),
        bound=f"slope + {N_SE:g} SE < 0 (log-log)",
        checked=("Consecutive middle-layer representations differ less and less as the depth "
                 "grows (median 1 - CKA between layers l and l+1 falls with L)."),
        why="" if passed else why,
        measured=(f"median over middle pairs of 1 - CKA(a_l, a_l+1), mean ± SE over seeds: "
                  f"{per_depth}; log-log slope vs L {slope:.2f} ± {se:.2f} ({len(nets)} nets, "
                  f"slope + {N_SE:g} SE = {slope + N_SE * se:.2f}); context, ntk_max/(NL) of "
                  f"these Adam nets: {ntk}; finding, CKA at relative depth p between adjacent "
                  f"depths (same seed): {cross_txt}"),
        expected="1 - CKA between consecutive middle layers falls with L",
        tolerance=f"log-log slope + {N_SE:g} SE < 0 over every net",
        passed=passed, kind=KIND,
        values={"slope": slope, "slope_se": se, "nets": res.nets.to_dict("list"),
                "pairs": res.pairs.to_dict("list"), "cross": res.cross.to_dict("list")})


CAPTIONS = {"representation_convergence": (
    "Left, the verdict's measure: the median over consecutive middle-layer pairs of "
    "1 - CKA(a_l, a_l+1) per net against depth (log-log; mean and standard error over the "
    "seeds, every net faint, the least-squares line dashed). Right, a finding: linear CKA "
    "between the representations at the same relative depth p of adjacent depths.")}


def figures(res: Result, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.representation_convergence_figure(res.nets, res.cross,
                                                    figdir / "representation_convergence.png")]
