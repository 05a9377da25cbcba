r"""Claim 4 (`representation-rank`, v2): almost all hidden representations are approximately
k-dimensional, and near the input and the output the dimension is higher
(docs/theory.md#claim-representation-rank; the paper: "provided the NTK is O(L)").

"Approximately k-dimensional" (:func:`~bnstruct.conventions.energy_rank`, one convention for
analyze, the bottleneck estimate and this claim): the centered representation
:math:`a_\ell - \bar a_\ell` on the training inputs, with singular values :math:`s_i`, keeps all
but ``ENERGY_TOL = 1%`` of its energy :math:`\sum_i s_i^2` in its top-k principal directions
(``rep_energy_outside_k <= ENERGY_TOL``) and its k-th direction is not negligible (the top
``k - 1`` leave more than ``ENERGY_TOL`` outside), i.e. ``rep_energy_rank == k``.

Per net, over the hidden representations ``l = 1 .. L-1`` (``l = L`` is the output
:math:`f(x)`): ``off`` = those not approximately k-dimensional, ``on_fraction = 1 - off /
(L-1)``; ``near_input`` / ``near_output``: the largest ``rep_energy_rank`` over ``l <= L/4`` /
``l > 3L/4`` (the output included).

Verdict (every net counts; rules fixed before any v2 run):

(a) "almost all layers" (:func:`~bnstruct.experiments._statistics.almost_all`, shared with
    claim 3): the count ``off`` does not grow with ``L`` (least-squares slope over every net
    + 2 SE < ``MAX_OFF_GROWTH = 0.25``) and every net at the deepest ``L`` has
    ``on_fraction >= ON_MIN = 0.75``;
(b) the ends are higher-dimensional: ``near_input > k`` and ``near_output > k`` in every net.

Reported, not judged: per depth (mean ± standard error over seeds) the median energy outside
the top k and of the k-th direction over the middle layers, the participation ratio
(:math:`(\sum s_i^2)^2/\sum s_i^4`, below k for any anisotropic k-dimensional representation)
and the count of singular values above ``0.1 s_1``.

v1 (changed, and why): v1 judged the middle layers' participation ratio within 0.5 of k; it is
``(1 + r^2)^2 / (1 + r^4)`` for a 2-d representation with singular-value ratio ``r``, below 2
unless isotropic, so it measured anisotropy, not dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..config import RunConfig
from ..conventions import ENERGY_TOL
from ..store import Run
from ._records import Claim, Kind, Memo
from ._statistics import almost_all, fmt_mean_se
from ._sweep import SWEEPS, SweepConfig, SweepResult, sweep_measure
from ._sweep import sweep_plan as _sweep_plan
from ._words import almost_all_bound, almost_all_key, almost_all_why

NAME = "representation-rank"
KIND: Kind = "claim"
#: the per-layer columns this claim reads (kept in claims.json)
LAYER_COLUMNS = ("run", "depth", "seed", "k", "layer", "middle", "rep_width",
                 "rep_energy_rank", "rep_energy_outside_k", "rep_energy_kth",
                 "rep_erank_entropy", "rep_erank_participation", "rep_erank_threshold",
                 "rep_rank_numerical", "rep_erank_participation_uncentered")

#: the shared composite depth sweep (claims 2-5 read the same runs and measurements)
CONFIGS = SWEEPS


def statement(cfg: SweepConfig) -> str:
    return (f"on {cfg.describe()}: almost all hidden representations are approximately "
            f"k-dimensional (centered; all but {ENERGY_TOL:.0%} of the energy in the top k "
            "principal directions, the k-th not negligible): the number of other layers grows "
            "by less than 0.25 per added layer (slope + 2 SE) and >= 75% of every deepest "
            "net's hidden layers are; near the input and the output the dimension is higher")


def plan(cfg: SweepConfig) -> list[RunConfig]:
    return _sweep_plan(cfg)


def measure(cfg: SweepConfig, runs: Sequence[Run], *, memo: Memo | None = None) -> SweepResult:
    return sweep_measure(cfg, runs, memo=memo)


def rank_summary(layers: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per net (depth, seed): ``off`` / ``on_fraction`` (hidden representations not /
    approximately k-dimensional), ``near_input`` / ``near_output`` (largest energy rank over
    ``l <= L/4`` / the hidden ``3L/4 < l < L``), and over the middle layers the medians of
    ``rep_energy_outside_k`` (``outside_k``), ``rep_energy_kth`` (``kth``), the participation
    ratio and the threshold count (reported)."""
    rows = []
    for (L, seed), g in layers.groupby(["depth", "seed"]):
        L = int(L)
        hidden = g[g["layer"] < L]
        off = int((hidden["rep_energy_rank"] != k).sum())
        mid = g[g["middle"]]
        q = L / 4
        rows.append({"depth": L, "seed": int(seed), "off": off,
                     "on_fraction": 1.0 - off / max(1, len(hidden)),
                     "near_input": int(g.loc[g["layer"] <= max(1, q), "rep_energy_rank"].max()),
                     "near_output": int(hidden.loc[hidden["layer"] > min(L - 2, 3 * q),
                                                   "rep_energy_rank"].max()),
                     "outside_k": float(mid["rep_energy_outside_k"].median()),
                     "kth": float(mid["rep_energy_kth"].median()),
                     "participation": float(mid["rep_erank_participation"].median()),
                     "threshold": float(mid["rep_erank_threshold"].median())})
    return pd.DataFrame(rows)


def verdict(res: SweepResult, cfg: SweepConfig) -> Claim:
    k = res.k
    s = rank_summary(res.layers, k)
    aa = almost_all(s)
    ends_ok = bool((s["near_input"] > k).all() and (s["near_output"] > k).all())
    by = s.groupby("depth")
    per = ", ".join(f"L={L}: {fmt_mean_se(g['off'], '.2g')} off "
                    f"({fmt_mean_se(g['on_fraction'], '.2f')} on)" for L, g in by)
    ends = ", ".join(f"L={L}: {fmt_mean_se(g['near_input'], '.2g')} / "
                     f"{fmt_mean_se(g['near_output'], '.2g')}" for L, g in by)
    mid = ", ".join(f"L={L}: {fmt_mean_se(g['outside_k'], '.1e')} outside, k-th "
                    f"{fmt_mean_se(g['kth'], '.2f')}, PR {fmt_mean_se(g['participation'], '.2f')},"
                    f" count {fmt_mean_se(g['threshold'], '.2g')}" for L, g in by)
    why = almost_all_why(aa, f"energy rank {k}")
    if not ends_ok:
        why.append(f"near the input or the output some net's representation is only "
                   f"{int(min(s['near_input'].min(), s['near_output'].min()))}-dimensional "
                   f"(needs more than {k})")
    ranks, no_fit = res.guard()
    why += no_fit
    passed = aa.passed and ends_ok and not no_fit
    return Claim(
        NAME, statement(cfg),
        key=(f"{almost_all_key(aa)}; ends >= "
             f"{int(min(s['near_input'].min(), s['near_output'].min()))}"),
        bound=f"{almost_all_bound()}; ends > {k}",
        checked=(f"In almost all hidden layers the centered representation has energy rank {k} "
                 f"(all but {ENERGY_TOL:.0%} of its energy in its top {k} principal directions),"
                 " and near the input and the output it has more dimensions."),
        why="; ".join(why) if not passed else "",
        measured=((ranks + '; ' if ranks else '')
                  + f"hidden representations not approximately {k}-dimensional per net: {per}; "
                  f"{aa.describe()}; largest energy rank near input / output: {ends}; middle "
                  f"layers (medians; reported, no verdict): {mid}"),
        expected=(f"energy rank {k} in almost all hidden layers; > {k} near input and output"),
        tolerance=(f"slope of the count + 2 SE < 0.25 and on-fraction >= 0.75 for every net at "
                   f"L = {aa.deepest} (energy tolerance {ENERGY_TOL:g}); both ends > {k} in "
                   "every net"),
        passed=passed, kind=KIND,
        note=("v1 judged the participation ratio (1.46-1.79 in the middle at quick scale, 2 only "
              "for an isotropic 2-d cloud); it is kept in the table as a measure of anisotropy. "
              "The energy rank needs no threshold relative to s_1 and its k-th direction is "
              "never negligible by construction"),
        values={"k": k, "energy_tol": ENERGY_TOL, "off_slope": aa.slope,
                "off_slope_err": aa.slope_err, "growth_ok": aa.growth_ok,
                "deepest_ok": aa.deepest_ok, "ends_ok": ends_ok, "per_net": s.to_dict("list"),
                "layers": res.layers[[c for c in LAYER_COLUMNS if c in res.layers]]
                .to_dict("list")})


CAPTIONS = {"representation_rank": (
    "Left, the verdict's measure: the energy rank of the centered representation (the fewest "
    "principal directions holding all but 1% of its energy) against the relative layer l/L, "
    "one line per depth (mean over the seeds, band: smallest to largest seed), k dashed. "
    "Right, reported only: the participation ratio, below k for any anisotropic "
    "k-dimensional cloud.")}


def figures(res: SweepResult, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.rep_rank_figure(res.layers, res.k, figdir / "representation_rank.png")]

