r"""Finding 9 (`digits`): bottleneck structure on real data (scikit-learn's 8x8 digits).

Not a pass/fail against the paper: per depth (mean ± standard error over the seeds) it reports
the bottleneck rank (median ``rep_energy_rank`` over the middle layers: claim 4's measure,
all but 1% of the centered energy; the median participation ratio is reported next to it),
the median ``near_one`` count of weight singular values in ``[0.5, 2]``, the test accuracy,
and the worst slack of the bottleneck inequality at ``k`` = the net's middle energy rank. The layer
table is analyzed at ``k = 1`` (it only sets ``s_k1`` and the gap columns). It passes when
every net trained and the inequality held (a theorem).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import ModelSpec, RunConfig
from ..store import Run
from ..training import adam_lr, default_recipe
from ._records import Claim, Kind, Memo, float64_copy, require_status, run_config, task_spec
from ._statistics import fmt_mean_se
from ._sweep import net_layers

NAME = "digits"
KIND: Kind = "finding"
RANK = "rep_energy_rank"
#: k of the layer table (the bound uses the measured rank)
TABLE_K = 1
ROUNDOFF = 1e-9


@dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (6, 12)
    width: int = 64
    n_train: int = 512
    lam: float = 0.01
    steps: int = 4000
    seeds: tuple[int, ...] = (0, 1, 2)


CONFIGS = {"smoke": Config(depths=(3,), width=16, n_train=128, steps=200, seeds=(0, 1)),
           "quick": Config(),
           # the full sweep's width and lam (sized for the 60-min CPU budget)
           "full": Config(depths=(6, 12), width=200, n_train=512, lam=5e-3, steps=6000)}


def statement(cfg: Config) -> str:
    return (f"digits (real data, a finding): bottleneck rank per depth "
            f"({', '.join(map(str, cfg.depths))}; width {cfg.width}, lam = {cfg.lam:g}, "
            f"{cfg.n_train} training images, {len(cfg.seeds)} seed(s)) on scikit-learn's digits, "
            "test accuracy, and the bound")


def plan(cfg: Config) -> list[RunConfig]:
    spec = task_spec("digits", n_train=cfg.n_train)
    recipe = default_recipe(cfg.lam, cfg.steps, adam_lr(cfg.width))
    return [run_config(spec, ModelSpec("mlp", cfg.width, L), recipe, seed=s)
            for L in cfg.depths for s in cfg.seeds]


@dataclass(frozen=True)
class Result:
    nets: pd.DataFrame
    layers: pd.DataFrame


def measure(cfg: Config, runs: Sequence[Run], *, memo: Memo | None = None) -> Result:
    from ..diagnostics import bottleneck_bound

    require_status(runs)
    nets, layers = [], []
    for r in runs:
        L = r.config.model.depth
        m = float64_copy(r.model)
        X = r.task.X.to(torch.float64)
        lt, _ = net_layers(r, TABLE_K)
        layers.append(lt)
        mid = lt[lt["middle"]]
        rank = float(mid[RANK].median())
        narrowest = int(min(lt["n_out"].min(), lt["n_in"].min()))
        k = max(1, min(int(np.ceil(rank)), narrowest))  # an untrained net may exceed it
        b = bottleneck_bound(m, X, k)
        with torch.no_grad():
            pred = m(r.task.X_test.to(torch.float64)).argmax(1)
        acc = float((pred == r.task.meta["labels_test"]).double().mean())
        nets.append({"depth": L, "seed": r.config.seed, "rep_energy_rank_middle": rank,
                     "rep_erank_participation_middle": float(
                         mid["rep_erank_participation"].median()),
                     "near_one_middle": float(mid["near_one"].median()),
                     "bound_k": k, "test_accuracy": acc,
                     "rel_fit": r.summary["final"].get("rel_fit"),
                     "param_norm2": float(b["param_norm2"].iloc[0]), "c1": float(b["c1"].iloc[0]),
                     "min_slack": float(np.nanmin(b["slack"].to_numpy())),
                     "slack_ok": _slack_ok(b["slack"].to_numpy(float),
                                          float(b["param_norm2"].iloc[0]))})
    return Result(pd.DataFrame(nets), pd.concat(layers, ignore_index=True))


def _slack_ok(sl: np.ndarray, norm2: float) -> bool:
    """Every finite slack >= -ROUNDOFF * norm2, at least one finite, no NaN or -inf (+inf:
    rank Jf(x) < k, skipped)."""
    fin = np.isfinite(sl)
    return bool(fin.any() and not (~fin & ~np.isposinf(sl)).any()
                and np.all(sl[fin] >= -ROUNDOFF * norm2))


def verdict(res: Result, cfg: Config) -> Claim:
    n = res.nets
    per = "; ".join(
        f"L={int(L)}: rank {fmt_mean_se(g['rep_energy_rank_middle'], '.2g')} (participation "
        f"{fmt_mean_se(g['rep_erank_participation_middle'], '.2f')}; "
        f"{fmt_mean_se(g['near_one_middle'], '.2g')} weight s.v. near 1), test acc "
        f"{fmt_mean_se(g['test_accuracy'], '.3f')}, min slack {float(g['min_slack'].min()):.2f}"
        for L, g in n.groupby("depth")) if len(n) else "no nets"
    ranks = ", ".join(f"L={int(L)}: {fmt_mean_se(g['rep_energy_rank_middle'], '.2g')}"
                      for L, g in n.groupby("depth")) if len(n) else "none"
    ok = bool(len(n) and n["slack_ok"].all())
    bad = n[~n["slack_ok"].astype(bool)] if len(n) else n
    scale = bad["param_norm2"].to_numpy(float) if "param_norm2" in bad else 0.0
    negative = int((bad["min_slack"].to_numpy(float) < -ROUNDOFF * scale).sum()) if len(bad) \
        else 0
    return Claim(
        NAME, statement(cfg), measured=per,
        key=(f"energy rank {ranks}; min slack "
             f"{float(n['min_slack'].min(skipna=False)) if len(n) else float('nan'):.2f}"),
        bound="(finding: no predicted rank); slack >= 0",
        checked=("On scikit-learn's 8x8 digits (a real task of unknown bottleneck rank) the "
                 "middle layers' energy rank is reported, and the bottleneck inequality is "
                 "checked at every point."),
        why="" if ok else ("no net to measure" if not len(n) else
                           f"the bottleneck inequality is violated (negative slack) in {negative} "
                           "net(s)" if negative else
                           f"{len(bad)} net(s) have a NaN or -inf slack at some point (a broken "
                           "measurement, e.g. a collapsed net)"),
        expected="(finding) a low bottleneck rank; bound holds",
        tolerance=f"bound slack >= -{ROUNDOFF:g} param_norm2 (theorem, float64 round-off), "
                  "every net",
        passed=ok,
        values={"nets": n.to_dict("list"), "layers": res.layers.to_dict("list")}, kind=KIND)


CAPTIONS = {"digits": (
    "Digits. Left and middle, reported: the energy rank and the participation ratio of the "
    "centered representation against the relative layer l/L, one line per depth (mean over "
    "the seeds, band: smallest to largest), labelled with the test accuracy. Right, what the "
    "finding judges: the smallest slack of the bottleneck inequality per net (mean and "
    "standard error over the seeds), which must be >= 0.")}


def figures(res: Result, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.digits_figure(res.layers, res.nets, figdir / "digits.png")]

