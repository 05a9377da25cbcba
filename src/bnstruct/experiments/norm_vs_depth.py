r"""Claim 2 (`norm-vs-depth`): :math:`\|\theta\|^2` of trained ReLU nets grows linearly in
``L`` with slope :math:`R_0 \approx` ``Rank_BN`` of the task (docs/theory.md#claim-norm-vs-depth);
the intercept estimates :math:`R_1`, which bounds :math:`2 \log|Jf(x)|_k` at data points.

The fit is ordinary least squares over every net of the sweep (all depths and seeds), so its
standard errors include the seed-to-seed spread. The verdict uses the error bar: the whole
interval ``R0_hat ± 2 SE`` must lie within ``k ± SLOPE_TOL`` (a fit too noisy to tell cannot
pass; v1 judged the point estimate)."""

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

NAME = "norm-vs-depth"
KIND: Kind = "claim"
SLOPE_TOL = 0.5
MIN_DEPTHS = 4

#: the shared composite depth sweep (claims 2-5 read the same runs and measurements)
CONFIGS = SWEEPS


def statement(cfg: SweepConfig) -> str:
    return (f"on {cfg.describe()}: the slope R0_hat of param_norm2 against L, fitted over every "
            f"net, satisfies |R0_hat - k| + 2 SE <= {SLOPE_TOL:g} (>= {MIN_DEPTHS} depths); the "
            "intercept R1_hat is reported next to max_x 2 log|Jf(x)|_k of each net")


def plan(cfg: SweepConfig) -> list[RunConfig]:
    return _sweep_plan(cfg)


def measure(cfg: SweepConfig, runs: Sequence[Run], *, memo: Memo | None = None) -> SweepResult:
    return sweep_measure(cfg, runs, memo=memo)


def verdict(res: SweepResult, cfg: SweepConfig) -> Claim:
    from ..theory import fit_depth

    nets = res.nets.sort_values(["depth", "seed"] if "seed" in res.nets else "depth")
    n_depths = int(nets["depth"].nunique())
    fit = fit_depth(nets["depth"], nets["param_norm2"])
    lp = ", ".join(f"L={int(L)}: {fmt_mean_se(g['log_pdet2_max'], '.2f')}"
                   for L, g in nets.groupby("depth"))
    err = 2 * fit.R0_err if np.isfinite(fit.R0_err) else np.inf
    passed = bool(n_depths >= MIN_DEPTHS and abs(fit.R0 - res.k) + err <= SLOPE_TOL)
    why = []
    if n_depths < MIN_DEPTHS:
        why.append(f"only {n_depths} depth(s) trained (needs {MIN_DEPTHS})")
    if not abs(fit.R0 - res.k) + err <= SLOPE_TOL:
        why.append(f"the slope of the squared norm against depth is {fit.R0:.2f} ± "
                   f"{fit.R0_err:.2f}: counting two standard errors it is "
                   f"{abs(fit.R0 - res.k) + err:.2f} from the task's rank {res.k}, more than "
                   f"{SLOPE_TOL:g}")
    ranks, no_fit = res.guard()
    why += no_fit
    passed = passed and not no_fit
    return Claim(
        NAME, statement(cfg),
        key=(f"R0_hat = {fit.R0:.2f} ± {fit.R0_err:.2f} "
             f"(|R0_hat - {res.k}| + 2 SE = {abs(fit.R0 - res.k) + err:.2f})"),
        bound=f"<= {SLOPE_TOL:g}, >= {MIN_DEPTHS} depths",
        checked=(f"The squared parameter norm of the trained ReLU nets grows linearly in depth "
                 f"with slope R0 equal to the task's bottleneck rank k = {res.k} (least-squares "
                 "fit of ||theta||^2 = L R0 + R1 over every net)."),
        why="; ".join(why) if not passed else "",
        measured=((ranks + '; ' if ranks else '')
                  + f"R0_hat = {fit.R0:.2f} ± {fit.R0_err:.2f} over depths "
                  f"{sorted(int(d) for d in nets['depth'].unique())} ({len(nets)} nets); "
                  f"R1_hat = {fit.R1:.1f} ± {fit.R1_err:.1f} vs max 2log|Jf|_k ({lp})"),
        expected=f"R0 = k = {res.k}; R1 >= 2 log|Jf(x)|_k",
        tolerance=f"|R0_hat - k| + 2 SE <= {SLOPE_TOL:g}, >= {MIN_DEPTHS} depths",
        passed=passed, kind=KIND,
        values={"R0": fit.R0, "R0_err": fit.R0_err, "R1": fit.R1, "R1_err": fit.R1_err,
                "k": res.k, "nets": nets.to_dict("list")})


CAPTIONS = {"norm_vs_depth": (
    "Squared parameter norm against depth L (mean and standard error over the seeds, every "
    "net faint), the least-squares line L R0_hat + R1_hat over every net, and a line of "
    "slope k (the task's bottleneck rank) for comparison; the "
    "verdict judges the fitted slope R0_hat against k.")}


def figures(res: SweepResult, figdir: Path) -> list[Path]:
    from .. import plots
    from ..theory import fit_depth

    fit = fit_depth(res.nets["depth"], res.nets["param_norm2"])
    return [plots.norm_vs_depth_figure(res.nets, fit, res.k, figdir / "norm_vs_depth.png")]
