r"""Claim 4 (`representation-rank`): middle-layer representations have effective rank k, and
higher near the input and the output (THEORY 3, prediction 4).

Read from :func:`bnstruct.analyze`'s table: ``rep_erank_participation`` is the participation
ratio :math:`(\sum s_i^2)^2 / \sum s_i^4` of the singular values of the **centered**
representation on the training inputs, ``rep_erank_threshold`` the count of those above
``THRESHOLD_RTOL = 0.1`` of the largest (reported, no verdict); ``middle`` marks
``L/4 < l <= 3L/4``. Per net: the median over the middle layers, and the largest value over
the first / last quarter of the layers (``l <= L/4``, ``l > 3L/4``; the output ``f(x)`` is
the last representation). Every net (every depth and seed) is checked; the table shows mean ±
standard error over seeds per depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..store import Run
from ._common import SWEEPS, Claim, Kind, Memo, SweepConfig, SweepResult, fmt_mean_se, sweep_measure
from ._common import sweep_plan as _sweep_plan

NAME = "representation-rank"
KIND: Kind = "claim"
RANK_TOL = 0.5
#: the rank column judged, and the one shown next to it (no verdict)
RANK = "rep_erank_participation"
SECONDARY = "rep_erank_threshold"
#: the per-layer columns of analyze's table this claim reads (kept in claims.json)
LAYER_COLUMNS = ("run", "depth", "seed", "k", "layer", "middle", "rep_width",
                 "rep_erank_entropy", "rep_erank_participation", "rep_erank_threshold",
                 "rep_rank_numerical", "rep_erank_participation_uncentered")

#: the shared composite depth sweep (claims 2-5 read the same runs and measurements)
CONFIGS = SWEEPS


def statement(cfg: SweepConfig) -> str:
    return (f"on {cfg.describe()}: middle-layer representations have effective rank "
            f"(participation ratio, centered) k within {RANK_TOL:g}, higher near input and "
            "output, in every net")


def plan(cfg: SweepConfig) -> list[RunConfig]:
    return _sweep_plan(cfg)


def measure(cfg: SweepConfig, runs: Sequence[Run], *, memo: Memo | None = None) -> SweepResult:
    return sweep_measure(cfg, runs, memo=memo)


def rank_summary(layers: pd.DataFrame) -> pd.DataFrame:
    """Per net (depth, seed): median middle rank (and the median threshold count, secondary
    evidence), max rank near the input and near the output."""
    rows = []
    for (L, seed), g in layers.groupby(["depth", "seed"]):
        q = L / 4
        mid = g.loc[g["middle"]]
        rows.append({"depth": int(L), "seed": int(seed), "middle": float(mid[RANK].median()),
                     "middle_threshold": float(mid[SECONDARY].median()),
                     "near_input": float(g.loc[g["layer"] <= max(1, q), RANK].max()),
                     "near_output": float(g.loc[g["layer"] > min(L - 1, 3 * q), RANK].max())})
    return pd.DataFrame(rows)


def verdict(res: SweepResult, cfg: SweepConfig) -> Claim:
    k = res.k
    s = rank_summary(res.layers)
    mid_ok = bool(np.all(np.abs(s["middle"] - k) <= RANK_TOL))
    ends_ok = bool(np.all(s["near_input"] > s["middle"]) and np.all(s["near_output"] > s["middle"]))
    by = s.groupby("depth")
    per = ", ".join(f"L={L}: {fmt_mean_se(g['near_input'], '.2f')} / "
                    f"{fmt_mean_se(g['middle'], '.2f')} / {fmt_mean_se(g['near_output'], '.2f')}"
                    for L, g in by)
    return Claim(
        NAME, statement(cfg),
        measured=(f"participation ratio near input / middle / near output: {per}; middle, "
                  f"counting singular values above 0.1 s_1 (no verdict): "
                  + ", ".join(f"L={L}: {fmt_mean_se(g['middle_threshold'], 'g')}"
                              for L, g in by)),
        expected=f"middle = {k}, ends > middle",
        tolerance=f"|middle - {k}| <= {RANK_TOL:g} and both ends above the middle, every net",
        passed=mid_ok and ends_ok, kind=KIND,
        note=("the participation ratio of a 2-d representation whose two singular values have "
              "ratio r is (1 + r^2)^2 / (1 + r^4): 2 only when isotropic, 1.5 at r ~ 0.6; the "
              "middle representations of the deeper nets are 2-d but anisotropic (weights: "
              "exactly 2 singular values near 1, s_3 ~ 0.01, see weight-spectra)"),
        values={"k": k, "middle_ok": mid_ok, "ends_ok": ends_ok, "per_net": s.to_dict("list"),
                "layers": res.layers[[c for c in LAYER_COLUMNS if c in res.layers]]
                .to_dict("list")})


def figures(res: SweepResult, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.rep_rank_figure(res.layers, res.k, figdir / "representation_rank.png")]
