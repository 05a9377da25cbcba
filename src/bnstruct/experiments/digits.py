r"""Finding 9 (`digits`): bottleneck structure on real data (scikit-learn's 8x8 digits).

Not a pass/fail against the paper: per depth it reports the bottleneck rank (median
effective rank of the middle representations, median count of weight singular values near
1), the test accuracy, and the worst slack of the bottleneck inequality at ``k`` = the
rounded middle rank. It passes when every net trained and the inequality held (a theorem).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import ModelSpec
from ..training import default_recipe
from ._common import Claim, Context, _to64, layer_table, task_spec, train_run

NAME = "digits"
STATEMENT = ("digits (real data, a finding): bottleneck rank per depth on scikit-learn's "
             "digits, test accuracy, and the bound")
ROUNDOFF = 1e-9


@dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (6, 12)
    width: int = 64
    n_train: int = 512
    lam: float = 0.01
    steps: int = 4000
    seed: int = 0


CONFIGS = {"smoke": Config(depths=(3,), width=16, n_train=128, steps=200),
           "quick": Config(),
           "full": Config(depths=(6, 12, 18, 25), width=200, n_train=1437, lam=2e-3,
                          steps=40000)}


@dataclass(frozen=True)
class Result:
    nets: pd.DataFrame
    layers: pd.DataFrame


def measure(ctx: Context, cfg: Config) -> Result:
    from ..diagnostics import bottleneck_bound

    spec = task_spec("digits", n_train=cfg.n_train)
    nets, layers = [], []
    for L in cfg.depths:
        r = train_run(ctx, spec, ModelSpec("mlp", cfg.width, L),
                      default_recipe(cfg.lam, cfg.steps), seed=cfg.seed)
        m = _to64(r.model)
        X = r.task.X.to(torch.float64)
        lt = layer_table(m, X, 1)
        layers.append(lt)
        mid = lt[lt["middle"]]
        rank = float(mid["rep_rank"].median())
        k = max(1, int(round(rank)))
        b = bottleneck_bound(m, X, k)
        with torch.no_grad():
            pred = m(r.task.X_test.to(torch.float64)).argmax(1)
        acc = float((pred == r.task.meta["labels_test"]).double().mean())
        nets.append({"depth": L, "rep_rank_middle": rank,
                     "n_near_1_middle": float(mid["n_near_1"].median()),
                     "k": k, "test_accuracy": acc, "rel_fit": r.summary["final"].get("rel_fit"),
                     "param_norm2": float(b["param_norm2"].iloc[0]), "c1": float(b["c1"].iloc[0]),
                     "min_slack": float(np.nanmin(b["slack"].to_numpy())),
                     "slack_ok": bool(np.all(b["slack"].dropna() >= -ROUNDOFF
                                             * b["param_norm2"].iloc[0]))})
    return Result(pd.DataFrame(nets), pd.concat(layers, ignore_index=True))


def verdict(res: Result, cfg: Config | None = None) -> Claim:
    n = res.nets
    per = "; ".join(f"L={int(r.depth)}: rank {r.rep_rank_middle:.2f} "
                    f"({r.n_near_1_middle:g} weight s.v. near 1), test acc {r.test_accuracy:.3f}, "
                    f"min slack {r.min_slack:.2f}" for r in n.itertuples())
    return Claim(
        NAME, STATEMENT, measured=per, expected="(finding) a low bottleneck rank; bound holds",
        tolerance="bound slack >= 0 (theorem)", passed=bool(len(n) and n["slack_ok"].all()),
        values={"nets": n.to_dict("list")}, kind="finding")


def figure(res: Result, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.digits_figure(res.layers, res.nets, figdir / "digits.png")]

