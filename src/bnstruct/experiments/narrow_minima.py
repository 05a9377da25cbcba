r"""Claim 7 (`narrow-minima`): a solution that under-estimates the rank has a much larger NTK
than the rank-k solution of the same task at the same depth (THEORY 4, prediction 7).

The rank-k net is the sweep's net at ``depth`` (width ``w``); the rank-1 net has the same
depth, width and recipe but one hidden layer of width 1 in the middle, which forces
``Rank_BN = 1``. The single ReLU neuron dies under the sweep's Adam step (the net then
collapses to the zero function, seen at seeds 0-2), so the rank-1 net trains with the same
recipe at ``narrow_lr_factor`` times the learning rate. Both NTKs are measured on the
training inputs as
:math:`\lambda_{max}(\Theta)/(NL)`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from ..config import ModelSpec
from ..tasks import TaskSpec
from ._common import SWEEPS, Claim, Context, SweepConfig, _to64, train_run

NAME = "narrow-minima"
STATEMENT = ("a solution that under-estimates the rank (forced through a rank-1 bottleneck) "
             "has an NTK several times larger than the rank-k solution of the same task at "
             "the same depth")
#: "several times": at least this ratio of top NTK eigenvalues
MIN_RATIO = 2.0


@dataclass(frozen=True)
class Config:
    sweep: SweepConfig
    depth: int
    narrow_lr_factor: float = 0.2


CONFIGS = {"smoke": Config(SWEEPS["smoke"], 4), "quick": Config(SWEEPS["quick"], 12),
           "full": Config(SWEEPS["full"], 20)}


def measure(ctx: Context, cfg: Config) -> pd.DataFrame:
    """Two rows (rank k, rank 1): width, param_norm2, rel_fit, ntk_per_NL."""
    from ..diagnostics import ntk_max_eig

    sw, L = cfg.sweep, cfg.depth
    spec = TaskSpec(sw.task, tuple(sorted(sw.task_kwargs)))
    mid = (L - 1) // 2
    narrow = tuple(1 if i == mid else sw.width for i in range(L - 1))
    rows = []
    narrow_stages = tuple(replace(st, lr=st.lr * cfg.narrow_lr_factor) for st in sw.stages(L))
    for label, width, stages in ((f"rank {sw.k}", sw.width, sw.stages(L)),
                                 ("rank 1", narrow, narrow_stages)):
        r = train_run(ctx, spec, ModelSpec("mlp", width, L), stages, seed=sw.seed)
        m = _to64(r.model)
        X = r.task.X.to(torch.float64)
        fin = r.summary["final"]
        rows.append({"solution": label, "depth": L, "param_norm2": fin.get("param_norm2"),
                     "rel_fit": fin.get("rel_fit"),
                     "ntk_per_NL": ntk_max_eig(m, X) / (X.shape[0] * L)})
    return pd.DataFrame(rows)


def verdict(df: pd.DataFrame, cfg: Config | None = None) -> Claim:
    full, low = df.iloc[0], df.iloc[1]
    ratio = float(low["ntk_per_NL"] / full["ntk_per_NL"])
    return Claim(
        NAME, STATEMENT,
        measured=(f"ntk_max/(NL): {full['solution']} {full['ntk_per_NL']:.3g} (rel_fit "
                  f"{full['rel_fit']:.2g}), rank 1 {low['ntk_per_NL']:.3g} (rel_fit "
                  f"{low['rel_fit']:.2g}); ratio {ratio:.2f}"),
        expected="rank-1 NTK several times the rank-k NTK",
        tolerance=f"ratio >= {MIN_RATIO:g}",
        passed=bool(ratio >= MIN_RATIO),
        values={"ratio": ratio, "nets": df.to_dict("list")})


def figure(df: pd.DataFrame, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.narrow_minima_figure(df, figdir / "narrow_minima.png")]

