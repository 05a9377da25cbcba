r"""Claim 7 (`narrow-minima`): a solution that under-estimates the rank has a much larger NTK
than the rank-k solution of the same task at the same depth (docs/theory.md#claim-narrow-minima).

The rank-k net is the sweep's net at ``depth`` (width ``w``; the same run config, so the
sweep's run is reused); the rank-1 net has the same depth, width and recipe but one hidden
layer of width 1 in the middle, which forces ``Rank_BN = 1``, and it trains at
``narrow_lr_factor`` times the learning rate (at the sweep's rate the single neuron dies: the
net collapses to the zero function, seen at seeds 0-2 at width 64). Known limit, measured: at
width 200 (full) the middle neuron dies within 400 steps even before the penalty, at this rate
and at 3x less (a deep ReLU net at init maps all inputs to nearly parallel representations by
its middle, so a one-neuron middle layer sees nearly the same pre-activation sign at every
point); a one-neuron *first* layer survives there but is no narrow minimum (quick: its NTK is
0.12 of the rank-2 net's), so the claim keeps the middle layer and reports the collapse. Both
NTKs are measured on the training inputs as :math:`\lambda_{max}(\Theta)/(NL)`. One pair per
seed (the sweep's seeds unless ``seeds`` is given); every pair must show the ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import ModelSpec, RunConfig
from ..store import Run
from ._records import Claim, Kind, Memo, float64_copy, require_status, run_config
from ._statistics import fmt_mean_se
from ._sweep import SWEEPS, SweepConfig

NAME = "narrow-minima"
KIND: Kind = "claim"
#: "several times": at least this ratio of top NTK eigenvalues
MIN_RATIO = 2.0


@dataclass(frozen=True)
class Config:
    sweep: SweepConfig
    depth: int
    narrow_lr_factor: float = 0.2
    #: seeds of the (rank k, rank 1) pairs; None: the sweep's seeds
    seeds: tuple[int, ...] | None = None

    @property
    def pair_seeds(self) -> tuple[int, ...]:
        return self.sweep.seeds if self.seeds is None else self.seeds


CONFIGS = {"smoke": Config(SWEEPS["smoke"], 4), "quick": Config(SWEEPS["quick"], 12),
           "full": Config(SWEEPS["full"], 20)}


def statement(cfg: Config) -> str:
    return (f"a solution that under-estimates the rank (forced through a rank-1 bottleneck) has "
            f"an NTK at least {MIN_RATIO:g} times larger than the rank-{cfg.sweep.k} solution "
            f"of the same task at the same depth (L = {cfg.depth}, {len(cfg.pair_seeds)} "
            "seed(s))")


def _narrow_width(cfg: Config) -> tuple[int, ...]:
    L, mid = cfg.depth, (cfg.depth - 1) // 2
    return tuple(1 if i == mid else cfg.sweep.width for i in range(L - 1))


def plan(cfg: Config) -> list[RunConfig]:
    """Per seed: the rank-k net (the sweep's config at ``depth``), then the rank-1 net."""
    sw, L = cfg.sweep, cfg.depth
    narrow_stages = tuple(replace(st, lr=st.lr * cfg.narrow_lr_factor) for st in sw.stages(L))
    out = []
    for s in cfg.pair_seeds:
        out.append(run_config(sw.task_spec, ModelSpec("mlp", sw.width, L), sw.stages(L), seed=s))
        out.append(run_config(sw.task_spec, ModelSpec("mlp", _narrow_width(cfg), L),
                              narrow_stages, seed=s))
    return out


def measure(cfg: Config, runs: Sequence[Run], *, memo: Memo | None = None) -> pd.DataFrame:
    """One row per net (solution "rank k" / "rank 1", seed): width, param_norm2, rel_fit,
    ntk_per_NL."""
    from ..diagnostics import ntk_max_eig

    require_status(runs)
    rows = []
    for i, r in enumerate(runs):
        m = float64_copy(r.model)
        X = r.task.X.to(torch.float64)
        fin = r.summary["final"]
        rows.append({"solution": f"rank {cfg.sweep.k}" if i % 2 == 0 else "rank 1",
                     "seed": r.config.seed, "depth": cfg.depth,
                     "param_norm2": fin.get("param_norm2"), "rel_fit": fin.get("rel_fit"),
                     "ntk_per_NL": ntk_max_eig(m, X) / (X.shape[0] * cfg.depth)})
    return pd.DataFrame(rows)


def ratios(df: pd.DataFrame) -> pd.DataFrame:
    """Per seed: the rank-k and rank-1 rows side by side and ``ratio`` = rank-1 / rank-k NTK."""
    full = df.iloc[0::2].reset_index(drop=True)
    low = df.iloc[1::2].reset_index(drop=True)
    return pd.DataFrame({"seed": full["seed"], "ntk_full": full["ntk_per_NL"],
                         "ntk_low": low["ntk_per_NL"], "rel_fit_full": full["rel_fit"],
                         "rel_fit_low": low["rel_fit"],
                         "ratio": low["ntk_per_NL"] / full["ntk_per_NL"]})


def verdict(df: pd.DataFrame, cfg: Config) -> Claim:
    r = ratios(df)
    rk = df["solution"].iloc[0]
    passed = bool(len(r) and np.all(r["ratio"] >= MIN_RATIO))
    small = r[r["ratio"] < MIN_RATIO] if len(r) else r
    why = ("no seed produced both solutions" if not len(r) else
           f"in {len(small)} of {len(r)} seed(s) the rank-1 net's NTK is only "
           f"{float(r['ratio'].min()):.3g} times the rank-k net's (needs {MIN_RATIO:g})")
    return Claim(
        NAME, statement(cfg),
        key=(f"NTK ratio rank 1 / rank k {fmt_mean_se(r['ratio'], '.3g')}, smallest "
             f"{float(r['ratio'].min()) if len(r) else float('nan'):.3g}"),
        bound=f">= {MIN_RATIO:g} for every seed",
        checked=("A net forced through a rank-1 bottleneck on a rank-k task sits in a much "
                 "narrower minimum: its NTK's top eigenvalue is several times that of the "
                 "rank-k solution of the same depth."),
        why="" if passed else why,
        measured=(f"ntk_max/(NL): {rk} {fmt_mean_se(r['ntk_full'])} (rel_fit "
                  f"{fmt_mean_se(r['rel_fit_full'], '.2g')}), rank 1 {fmt_mean_se(r['ntk_low'])}"
                  f" (rel_fit {fmt_mean_se(r['rel_fit_low'], '.2g')}); ratio "
                  f"{fmt_mean_se(r['ratio'], '.3g')}, smallest {float(r['ratio'].min()):.3g} "
                  f"over {len(r)} seed(s)"),
        expected="rank-1 NTK several times the rank-k NTK",
        tolerance=f"ratio >= {MIN_RATIO:g} for every seed",
        passed=passed, kind=KIND,
        values={"ratio": float(r["ratio"].mean()), "ratio_min": float(r["ratio"].min()),
                "per_seed": r.to_dict("list"), "nets": df.to_dict("list")})


CAPTIONS = {"narrow_minima": (
    "The NTK's top eigenvalue divided by N L of the rank-k solution and of the rank-1 "
    "bottleneck solution at the same depth: bars at the mean over the seeds with standard "
    "error bars, every seed as a black point.")}


def figures(df: pd.DataFrame, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.narrow_minima_figure(df, figdir / "narrow_minima.png")]
