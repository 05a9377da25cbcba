r"""Leaky claim 4 (`leaky-structure`, THEORY 7 prediction 4): the middle layers have ``k*``
dominant singular values in :math:`W_p` (the largest gap of the relu part's spectrum after
the ``k*``-th value) and in :math:`A_p` (its centered energy rank is ``k*``), and :math:`A_p`
is nearly non-negative there. Judged at the largest leak for every seed, with the package's
"almost all layers" share :data:`~bnstruct.experiments._statistics.ON_MIN` of the middle
layers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..store import Run
from ._leaky import LEAKY, LeakyConfig, LeakyResult, at_leak, leaky_measure, leaky_plan
from ._records import Claim, Kind, Memo
from ._statistics import ON_MIN, fmt_mean_se

NAME = "leaky-structure"
KIND: Kind = "claim"
#: "nearly non-negative": ||A - relu A|| / ||A|| at most this in every middle layer
NONNEG_MAX = 0.1

CONFIGS = LEAKY


def statement(cfg: LeakyConfig) -> str:
    return (f"on {cfg.describe()}: at the largest Lt the middle layers have k* = {cfg.k} "
            "dominant singular values in W_p and in A_p, and A_p is nearly non-negative")


def plan(cfg: LeakyConfig) -> list[RunConfig]:
    return leaky_plan(cfg)


def measure(cfg: LeakyConfig, runs: Sequence[Run], *, memo: Memo | None = None
            ) -> LeakyResult:
    return leaky_measure(cfg, runs, memo=memo)


def verdict(res: LeakyResult, cfg: LeakyConfig) -> Claim:
    top = max(cfg.leaks)
    t = at_leak(res.nets, top)
    rf, wf = t["mid_rank_fraction"].to_numpy(float), t["mid_wgap_fraction"].to_numpy(float)
    ng = t["nonneg_gap_middle"].to_numpy(float)
    checks = {f"A_p: energy rank k* in >= {ON_MIN:g} of the middle layers": bool(
                  rf.size and (rf >= ON_MIN).all()),
              f"W_p: largest gap after the k*-th value in >= {ON_MIN:g} of the middle layers":
                  bool(wf.size and (wf >= ON_MIN).all()),
              f"||A - relu A|| / ||A|| <= {NONNEG_MAX:g} in the middle layers": bool(
                  ng.size and (ng <= NONNEG_MAX).all())}
    ok = all(checks.values()) and len(t) == len(cfg.seeds)
    mid = res.layers[(res.layers["leak"] == top) & ~res.layers["adaptive"].astype(bool)]
    from ..conventions import middle_layers

    mid = mid[mid["layer"].isin(middle_layers(int(res.layers["layer"].max())))]
    ratio = (mid[f"w_s{res.k}"] / mid[f"w_s{res.k + 1}"]).to_numpy(float)
    why = "; ".join(f"not met: {n}" for n, v in checks.items() if not v)
    if not list(checks.values())[1] and ratio.size:
        why += (f" (s_k*/s_(k*+1) of W_p in the middle layers: median {np.median(ratio):.2f}, "
                "a clear gap needs >= 2: the weights keep more than k* large values)")
    return Claim(
        NAME, statement(cfg),
        key=(f"at Lt={top:g}, share of middle layers: A rank k* {fmt_mean_se(rf, '.2f')}, "
             f"W gap at k* {fmt_mean_se(wf, '.2f')}; max nonneg gap {ng.max():.3f}"),
        bound=f">= {ON_MIN:g}, >= {ON_MIN:g}; <= {NONNEG_MAX:g}",
        checked=("In the middle layers of every net at the largest leak, the representation "
                 "has k* principal directions, the weight matrix k* dominant singular values, "
                 "and the representation is close to non-negative."),
        why=why if not ok else "",
        measured=(f"share of middle layers with energy rank k*: {fmt_mean_se(rf, '.2f')}; with "
                  f"the W gap at k*: {fmt_mean_se(wf, '.2f')}; s_k*/s_(k*+1) of W in the middle "
                  f"layers: median {np.median(ratio):.2f} (clear gap: >= 2); nonneg gap "
                  f"{fmt_mean_se(ng)}"),
        expected=f"k* = {res.k} dominant values in W_p and A_p; A_p >= 0 in the middle",
        tolerance=(f"'almost all' middle layers (>= {ON_MIN:g}); nonneg gap <= "
                   f"{NONNEG_MAX:g}"),
        passed=ok, kind=KIND,
        values={"k": res.k, "leak": top, "checks": checks, "w_ratio_median": float(
            np.median(ratio)) if ratio.size else float("nan"),
                "nets": t[["seed", "mid_rank_fraction", "mid_wgap_fraction",
                           "nonneg_gap_middle", "bottleneck_rank"]].to_dict("list")},
        note="W_p's spectrum is that of its relu part W_l[:, :w] (the bias column left out); "
             "A_p's energy rank is of the centered representation (conventions.energy_rank)")


CAPTIONS = {"leaky_structure": (
    "One net at the largest leak. Left: the top singular values of W_p (relu part) along "
    "depth, the first k* in blue. Middle: the same for the centered representation A_p, "
    "divided by its largest. Right: the distance of A_p from non-negative, "
    "||A - relu A|| / ||A||, along depth: the theory has it small in the middle.")}


def figures(res: LeakyResult, figdir: Path) -> list[Path]:
    from ._leaky_figures import structure_figure

    top = float(res.nets.loc[~res.nets["adaptive"].astype(bool), "leak"].max())
    first = at_leak(res.nets, top).sort_values("seed").iloc[0]["run"]
    layer = res.layers[res.layers["run"] == first]
    return [structure_figure(res.spectra[first], layer, res.k, top,
                             figdir / "leaky_structure.png")]
