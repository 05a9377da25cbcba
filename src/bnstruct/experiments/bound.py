r"""Claim 5 (`bound`): the bottleneck inequality holds with non-negative slack for
every trained net (every depth and seed) and every training point; ``c1 = param_norm2 - kL``
is reported per depth, mean ± standard error over seeds (the theory's regime is
``c1 = O(1)``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..store import Run
from ._records import Claim, Kind, Memo
from ._statistics import fmt_mean_se
from ._sweep import SWEEPS, SweepConfig, SweepResult, sweep_measure
from ._sweep import sweep_plan as _sweep_plan

NAME = "bound"
KIND: Kind = "claim"
#: float64 round-off allowed on the slack, relative to param_norm2
ROUNDOFF = 1e-9

#: the shared composite depth sweep (claims 2-5 read the same runs and measurements)
CONFIGS = SWEEPS


def statement(cfg: SweepConfig) -> str:
    return (f"on {cfg.describe()}: the bottleneck inequality holds with non-negative slack for "
            "every trained net and data point; its slack and c1 = param_norm2 - kL are "
            "reported per depth")


def plan(cfg: SweepConfig) -> list[RunConfig]:
    return _sweep_plan(cfg)


def measure(cfg: SweepConfig, runs: Sequence[Run], *, memo: Memo | None = None) -> SweepResult:
    return sweep_measure(cfg, runs, memo=memo)


def verdict(res: SweepResult, cfg: SweepConfig) -> Claim:
    b = res.bound
    sl = b["slack"].to_numpy(dtype=float)
    scale = b["param_norm2"].to_numpy(dtype=float)
    finite = np.isfinite(sl)
    # +inf: rank Jf(x) < k, the right side is infinite (a legitimate skip); NaN or -inf is a
    # broken measurement or a violation, never skipped
    skipped = np.isposinf(sl)
    broken = ~finite & ~skipped
    worst = float(np.min(sl[finite])) if finite.any() else float("nan")
    ok = bool(finite.any() and not broken.any()
              and np.all(sl[finite] >= -ROUNDOFF * scale[finite]))
    skip_by = b.loc[skipped].groupby(["depth", "seed"]).size() if skipped.any() else None
    nets = res.nets.sort_values("depth")
    per = ", ".join(f"L={int(L)}: c1={fmt_mean_se(g['c1'], '.1f')}, min slack "
                    f"{float(g['min_slack'].min()):.2f}" for L, g in nets.groupby("depth"))
    why = []
    if not finite.any():
        why.append("no (net, point) pair had a finite slack to judge")
    if broken.any():
        why.append(f"{int(broken.sum())} slack(s) are NaN or -inf: a broken measurement or a "
                   "violated inequality")
    if finite.any() and not np.all(sl[finite] >= -ROUNDOFF * scale[finite]):
        why.append(f"the smallest slack is {worst:.3g} < 0: the inequality is violated, which "
                   "it never may be for any parameters (a bug)")
    return Claim(
        NAME, statement(cfg),
        key=f"min slack {worst:.3g} over {int(finite.sum())} (net, point) pairs",
        bound="slack >= 0 (up to float64 round-off)",
        checked=("The bottleneck inequality (sum over layers of s_{i>k}(W_l)^2 plus the top-k "
                 "excess, at most ||theta||^2 - kL - 2 log|Jf(x)|_k) holds for every trained "
                 "net at every training point."),
        why="; ".join(why) if not ok else "",
        measured=(f"min slack {worst:.3g} over {int(finite.sum())} (net, point) pairs of "
                  f"{len(nets)} nets; {per}"
                  + ("; points skipped (rank Jf(x) < k, infinite right side): " + ", ".join(
                      f"L={int(L)} seed {int(sd)}: {int(n)}" for (L, sd), n in skip_by.items())
                     if skip_by is not None else "")
                  + (f"; {int(broken.sum())} NaN/-inf slack(s): FAIL" if broken.any() else "")),
        expected="slack >= 0 everywhere; c1 = O(1)",
        tolerance=(f"slack >= -{ROUNDOFF:g} * param_norm2 (float64 round-off); no NaN or "
                   "-inf slack"),
        passed=ok, kind=KIND,
        values={"k": res.k, "min_slack": worst, "n_points": int(finite.sum()),
                "n_infinite": int(skipped.sum()), "n_broken": int(broken.sum()),
                "nets": nets.to_dict("list")},
        note="points where rank Jf(x) < k have an infinite right side and are not counted")


CAPTIONS = {"bound": (
    "Left: both sides of the bottleneck inequality per depth, the right side "
    "c1 - 2 log|Jf(x)|_k at every training point (blue, jittered) and the left side of every "
    "net (red bars); the verdict requires every red bar below every blue point of its net. "
    "Right: c1 = ||theta||^2 - kL against depth (mean and standard error over the seeds, "
    "every net faint; it stays O(1) when the nets find the rank-k solution).")}


def figures(res: SweepResult, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.bound_figure(res.bound, res.nets, res.k, figdir / "bound.png")]
