r"""Claim 2 (`norm-vs-depth`): :math:`\|\theta\|^2` of trained ReLU nets grows linearly in
``L`` with slope :math:`R_0 \approx` ``Rank_BN`` of the task (THEORY 2, prediction 2); the
intercept estimates :math:`R_1`, which bounds :math:`2 \log|Jf(x)|_k` at data points."""

from __future__ import annotations

from pathlib import Path

from ._common import SWEEPS, Claim, SweepConfig, SweepResult, sweep_measure

NAME = "norm-vs-depth"
STATEMENT = ("on composite (k = 2) at >= 4 depths, the fitted slope R0_hat of param_norm2 "
             "against L satisfies |R0_hat - k| <= 0.5; the intercept R1_hat is reported next to "
             "max_x 2 log|Jf(x)|_k of each net")
SLOPE_TOL = 0.5
MIN_DEPTHS = 4


#: the shared composite depth sweep (claims 2-5 read the same runs and measurements)
CONFIGS = SWEEPS
measure = sweep_measure


def verdict(res: SweepResult, cfg: SweepConfig | None = None) -> Claim:
    from ..theory import fit_depth

    nets = res.nets.sort_values("depth")
    n_depths = int(nets["depth"].nunique())
    fit = fit_depth(nets["depth"], nets["param_norm2"])
    lp = ", ".join(f"L={int(r.depth)}: {r.log_pdet2_max:.2f}" for r in nets.itertuples())
    passed = bool(n_depths >= MIN_DEPTHS and abs(fit.R0 - res.k) <= SLOPE_TOL)
    return Claim(
        NAME, STATEMENT,
        measured=(f"R0_hat = {fit.R0:.2f} ± {fit.R0_err:.2f} over depths "
                  f"{[int(d) for d in nets['depth']]}; R1_hat = {fit.R1:.1f} ± {fit.R1_err:.1f} "
                  f"vs max 2log|Jf|_k ({lp})"),
        expected=f"R0 = k = {res.k}; R1 >= 2 log|Jf(x)|_k",
        tolerance=f"|R0_hat - k| <= {SLOPE_TOL:g}, >= {MIN_DEPTHS} depths",
        passed=passed,
        values={"R0": fit.R0, "R0_err": fit.R0_err, "R1": fit.R1, "R1_err": fit.R1_err,
                "k": res.k, "nets": nets.to_dict("list")})


def figure(res: SweepResult, figdir: Path) -> list[Path]:
    from .. import plots
    from ..theory import fit_depth

    fit = fit_depth(res.nets["depth"], res.nets["param_norm2"])
    return [plots.norm_vs_depth_figure(res.nets, fit, res.k, figdir / "norm_vs_depth.png")]

