r"""Claim 6 (`learning-rate`): full-batch gradient descent at ``lr = c / L`` (THEORY 4).

At a minimum the Hessian of the objective is about :math:`\frac2N J^T J + 2\lambda I`, so GD
is stable only if :math:`\lambda_{max}(\Theta)/N \lesssim 1/\mathrm{lr} = L/c`, i.e.
:math:`\lambda_{max}(\Theta)/(NL) \lesssim 1/c`: bounded across depths, larger for smaller
``c``; the Hessian's top eigenvalue at the end is at most :math:`2/\mathrm{lr}`.
Checked: (a) :math:`\lambda_{max}(\Theta)/(NL) \le 1.1/c` for every converged run,
(b) the median over depths of :math:`\lambda_{max}(\Theta)/(NL)` strictly decreases as ``c``
grows, (c) :math:`\lambda_{max}(H) \le 1.1 \cdot 2/\mathrm{lr}` for every converged run.
Runs that diverge (a too large ``c`` for that depth) or collapse to the zero function
(relative train error > :data:`COLLAPSED`: GD with the penalty found the trivial minimum) are
reported and left out: they are not trained solutions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import ModelSpec
from ..training import Stage
from ._common import Claim, Context, _to64, task_spec, train_run

NAME = "learning-rate"
STATEMENT = ("full-batch GD at lr = c/L for several c and depths: ntk_max_eig/(N L) stays "
             "bounded across depths; smaller learning rates end at larger NTKs; the Hessian's "
             "top eigenvalue at the end sits at or below 2/lr (within 10%)")
REL_TOL = 0.10
#: relative train error above which a run counts as collapsed to the zero function
COLLAPSED = 0.5


@dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (4, 8, 12)
    cs: tuple[float, ...] = (0.125, 0.25, 0.5)
    n_train: int = 128
    width: int = 32
    lam: float = 0.005
    warmup_steps: int = 3000
    steps: int = 3000
    seed: int = 0

    def stages(self, L: int, c: float) -> tuple[Stage, ...]:
        lr = c / L
        return (Stage("gd", lr, 0.0, self.warmup_steps), Stage("gd", lr, self.lam, self.steps))


CONFIGS = {
    "smoke": Config(depths=(2, 3), cs=(0.5, 1.0), n_train=32, width=8, warmup_steps=50,
                    steps=100),
    "quick": Config(),
    "full": Config(depths=(4, 8, 12, 16, 24), cs=(0.125, 0.25, 0.5, 1.0), n_train=256,
                   width=100, warmup_steps=5000, steps=20000),
}


def measure(ctx: Context, cfg: Config) -> pd.DataFrame:
    """One row per (depth, c): lr, status, rel_fit, ntk_max_eig/(N L), hessian_max_eig,
    2/lr."""
    from ..diagnostics import hessian_max_eig, ntk_max_eig

    spec = task_spec("composite", k=2, n_train=cfg.n_train)
    rows = []
    for L in cfg.depths:
        for c in cfg.cs:
            r = train_run(ctx, spec, ModelSpec("mlp", cfg.width, L), cfg.stages(L, c),
                          seed=cfg.seed, allow_diverged=True)
            lr = c / L
            row = {"depth": L, "c": c, "lr": lr, "status": r.status,
                   "rel_fit": r.summary["final"].get("rel_fit"), "two_over_lr": 2 / lr,
                   "ntk_per_NL": float("nan"), "hessian_max": float("nan")}
            if r.status == "completed" and (row["rel_fit"] or 0.0) > COLLAPSED:
                row["status"] = "collapsed"
            if row["status"] == "completed":
                m = _to64(r.model)
                X, Y = r.task.X.to(torch.float64), r.task.Y.to(torch.float64)
                row["ntk_per_NL"] = ntk_max_eig(m, X) / (X.shape[0] * L)
                row["hessian_max"] = hessian_max_eig(m, X, Y, cfg.lam)
            rows.append(row)
    return pd.DataFrame(rows)


def verdict(df: pd.DataFrame, cfg: Config | None = None) -> Claim:
    ok = df[df["status"] == "completed"]
    bound_ok = bool(len(ok) and np.all(ok["ntk_per_NL"] <= (1 + REL_TOL) / ok["c"]))
    med = ok.groupby("c")["ntk_per_NL"].median().sort_index()
    mono_ok = bool(len(med) >= 2 and np.all(np.diff(med.to_numpy()) < 0))
    ratio = ok["hessian_max"] / ok["two_over_lr"]
    hess_ok = bool(len(ok) and np.all(ratio <= 1 + REL_TOL))
    per_c = ", ".join(f"c={c:g}: {v:.3g}" for c, v in med.items())
    n_div = int((df["status"] == "diverged").sum())
    n_col = int((df["status"] == "collapsed").sum())
    return Claim(
        NAME, STATEMENT,
        measured=(f"median ntk_max/(NL) {per_c}; max over runs of ntk_max/(NL) * c = "
                  f"{float((ok['ntk_per_NL'] * ok['c']).max()):.3g}; max hessian/(2/lr) = "
                  f"{float(ratio.max()):.3g}; {len(ok)} runs, {n_div} diverged, {n_col} collapsed"),
        expected="ntk_max/(NL) <= 1/c; decreasing in c; hessian <= 2/lr",
        tolerance=f"{100 * REL_TOL:g}% on both bounds; strict decrease of the medians",
        passed=bound_ok and mono_ok and hess_ok,
        values={"bound_ok": bound_ok, "monotone_ok": mono_ok, "hessian_ok": hess_ok,
                "runs": df.to_dict("list")})


def figure(df: pd.DataFrame, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.learning_rate_figure(df, figdir / "learning_rate.png")]


def run(ctx: Context, cfg: Config) -> Claim:
    df = measure(ctx, cfg)
    c = verdict(df, cfg)
    return replace(c, figures=tuple(str(p) for p in figure(df, ctx.figdir)))
