r"""Claim 4 (`representation-rank`): middle-layer representations have effective rank k, and
higher near the input and the output (THEORY 3, prediction 4).

Effective rank: participation ratio of the singular values of the centered representation
:math:`a_\ell - \bar a_\ell` on the training inputs (see ``_common``). "Near the input/output":
the largest rank over the first / last quarter of the layers (``l <= L/4``, ``l > 3L/4``; the
output ``f(x)`` itself is the last representation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._common import SWEEPS, Claim, SweepConfig, SweepResult, sweep_measure

NAME = "representation-rank"
STATEMENT = ("middle-layer representations have effective rank k (within 0.5), higher near "
             "input and output")
RANK_TOL = 0.5


#: the shared composite depth sweep (claims 2-5 read the same runs and measurements)
CONFIGS = SWEEPS
measure = sweep_measure


def rank_summary(layers: pd.DataFrame) -> pd.DataFrame:
    """Per depth: median middle rank (and the median threshold count, secondary evidence),
    max rank near the input and near the output."""
    rows = []
    for L, g in layers.groupby("depth"):
        q = L / 4
        mid = g.loc[g["middle"]]
        thr = (float(mid["rep_rank_threshold"].median()) if "rep_rank_threshold" in g
               else float("nan"))
        rows.append({"depth": int(L), "middle": float(mid["rep_rank"].median()),
                     "middle_threshold": thr,
                     "near_input": float(g.loc[g["layer"] <= max(1, q), "rep_rank"].max()),
                     "near_output": float(g.loc[g["layer"] > min(L - 1, 3 * q),
                                                "rep_rank"].max())})
    return pd.DataFrame(rows)


def verdict(res: SweepResult, cfg: SweepConfig | None = None) -> Claim:
    k = res.k
    s = rank_summary(res.layers)
    mid_ok = bool(np.all(np.abs(s["middle"] - k) <= RANK_TOL))
    ends_ok = bool(np.all(s["near_input"] > s["middle"]) and np.all(s["near_output"] > s["middle"]))
    per = ", ".join(f"L={r.depth}: {r.near_input:.2f} / {r.middle:.2f} / {r.near_output:.2f}"
                    for r in s.itertuples())
    return Claim(
        NAME, STATEMENT,
        measured=(f"rank near input / middle / near output: {per}; middle, counting singular "
                  f"values above 0.1 s_1 (no verdict): "
                  + ", ".join(f"L={r.depth}: {r.middle_threshold:g}" for r in s.itertuples())),
        expected=f"middle = {k}, ends > middle",
        tolerance=f"|middle - {k}| <= {RANK_TOL:g} and both ends above the middle, every net",
        passed=mid_ok and ends_ok,
        note=("the participation ratio of a 2-d representation whose two singular values have "
              "ratio r is (1 + r^2)^2 / (1 + r^4): 2 only when isotropic, 1.5 at r ~ 0.6; the "
              "middle representations of the deeper nets are 2-d but anisotropic (weights: "
              "exactly 2 singular values near 1, s_3 ~ 0.01, see weight-spectra)"),
        values={"k": k, "middle_ok": mid_ok, "ends_ok": ends_ok, "summary": s.to_dict("list")})


def figure(res: SweepResult, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.rep_rank_figure(res.layers, res.k, figdir / "representation_rank.png")]

