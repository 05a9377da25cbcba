r"""The leaky-ResNet sweep that the ``leaky-*`` claims read (Jacot & Kaiser, arXiv
2405.17573; docs/theory.md#leaky-resnets): its config, its planned runs and one measurement
per net (:func:`bnstruct.diagnostics.leaky_analysis`, exactly what ``bnstruct analyze``
shows for the run), shared through the memo.

The task is the paper's at CPU size: :func:`bnstruct.tasks.teacher`, a composition of random
shallow ReLU nets ``d -> k* -> d`` with ``k* = 3`` (centered, unit scale), ``d = 30`` as in
the paper. Each leak ``Lt`` trains ``len(seeds)`` nets of ``depth`` leaky layers: Adam at
``lr = lr_per_leak * Lt`` (the weights scale with ``Lt``, THEORY 7: ``W_p = Lt B_p
sigma^T``), then a smaller-rate stage (``settle_factor`` times the rate), both with the
paper's penalty :math:`\frac{\lambda}{2\tilde L}\sum\rho_\ell\|W_\ell\|^2` at
``lam = lam_times_leak / Lt`` (the paper: "about 1e-3 / Lt").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ..config import ModelSpec, RunConfig
from ..store import Run
from ..training import Stage
from ._records import Memo, require_status, run_config, task_spec

__all__ = ["LeakyConfig", "LeakyResult", "LEAKY", "leaky_plan", "adaptive_plan",
           "leaky_measure", "net_columns", "at_leak", "leak_label"]


@dataclass(frozen=True)
class LeakyConfig:
    """The leaky-ResNet sweep of one mode (module docstring)."""

    leaks: tuple[float, ...]
    seeds: tuple[int, ...]
    depth: int
    width: int
    n_train: int
    n_test: int
    steps: int
    settle_steps: int
    d: int = 30
    k: int = 3
    hidden: int = 100
    lam_times_leak: float = 1e-2
    lr_per_leak: float = 6e-4
    settle_factor: float = 0.1
    data_seed: int = 0
    #: the leak of the adaptive-steps comparison and how often the steps are re-set
    adaptive_leak: float = 8.0
    adapt_every: int = 250

    def lam(self, leak: float) -> float:
        return self.lam_times_leak / leak

    def stages(self, leak: float) -> tuple[Stage, ...]:
        lr, lam = self.lr_per_leak * leak, self.lam(leak)
        return (Stage("adam", lr, lam, self.steps),
                Stage("adam", lr * self.settle_factor, lam, self.settle_steps))

    def describe(self) -> str:
        return (f"leaky ResNets (width {self.width}, {self.depth} layers, equal steps) on the "
                f"teacher task {self.d} -> {self.k} -> {self.d} (k* = {self.k}, "
                f"{self.n_train} training points), Lt = "
                f"{', '.join(f'{x:g}' for x in self.leaks)}, {len(self.seeds)} seeds each, "
                f"lam = {self.lam_times_leak:g}/Lt, Adam {self.steps} steps at "
                f"{self.lr_per_leak:g} Lt then {self.settle_steps} at "
                f"{self.settle_factor:g} of it")


#: the sweep per mode. quick: the paper's task at CPU size (width 32 and 16 layers instead of
#: 100 and 20, 300 points instead of 1000, 3250 steps instead of 6000 epochs; Lt up to 8 so
#: that rho Lt = 0.5 stays a fine step; sized to add about a minute to reproduce --quick on
#: 2 idle cores); full: the paper's sizes (width 100, 20 layers, 1000
#: points), Lt up to 7 as in its spectra, steps cut to fit about 10 minutes on 2 cores
LEAKY: dict[str, LeakyConfig] = {
    "smoke": LeakyConfig(leaks=(2.0, 4.0), seeds=(0, 1), depth=8, width=8, n_train=64,
                         n_test=64, steps=150, settle_steps=50, hidden=16,
                         adaptive_leak=4.0, adapt_every=50),
    "quick": LeakyConfig(leaks=(2.0, 4.0, 8.0), seeds=(0, 1, 2), depth=16, width=32,
                         n_train=300, n_test=300, steps=2500, settle_steps=750),
    "full": LeakyConfig(leaks=(2.0, 4.0, 7.0), seeds=(0, 1, 2), depth=20, width=100,
                        n_train=1000, n_test=1000, steps=2000, settle_steps=500,
                        adaptive_leak=7.0),
}


def _task(cfg: LeakyConfig) -> Any:
    return task_spec("teacher", n_train=cfg.n_train, n_test=cfg.n_test, k=cfg.k, d_in=cfg.d,
                     d_out=cfg.d, hidden=cfg.hidden, seed=cfg.data_seed)


def _config(cfg: LeakyConfig, leak: float, seed: int, adapt: bool) -> RunConfig:
    model = ModelSpec("leaky-resnet", cfg.width, cfg.depth, leak=float(leak),
                      adapt_every=cfg.adapt_every if adapt else None)
    return run_config(_task(cfg), model, cfg.stages(leak), seed=seed)


def leaky_plan(cfg: LeakyConfig) -> list[RunConfig]:
    """The sweep's runs: every leak x seed, equal layer steps."""
    return [_config(cfg, Lt, s, False) for Lt in cfg.leaks for s in cfg.seeds]


def adaptive_plan(cfg: LeakyConfig) -> list[RunConfig]:
    """At ``adaptive_leak``: the equal-steps nets (the sweep's when the leak is one of its),
    then the same seeds with adaptive steps."""
    return ([_config(cfg, cfg.adaptive_leak, s, False) for s in cfg.seeds]
            + [_config(cfg, cfg.adaptive_leak, s, True) for s in cfg.seeds])


@dataclass
class LeakyResult:
    """Every net's per-layer table (``layers``: :data:`~bnstruct.diagnostics.LEAKY_COLUMNS`
    plus ``run``, ``leak``, ``seed``, ``adaptive``) and summary row (``nets``), the
    spectra per run name (``(weight, representation)``), and ``k`` = k*."""

    k: int
    layers: pd.DataFrame
    nets: pd.DataFrame
    spectra: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = field(repr=False)


def _net(run: Run) -> tuple[pd.DataFrame, dict[str, Any], list[np.ndarray], list[np.ndarray]]:
    from ..diagnostics import leaky_analysis

    last = run.config.stages[-1]
    a = leaky_analysis(run.model, run.task.X, Y=run.task.Y, lam=last.lam)
    m = run.config.model
    meta = {"run": run.path.name, "leak": float(m.leak or math.nan), "seed": run.config.seed,
            "adaptive": m.adapt_every is not None}
    layers = a.layers.copy()
    for i, (c, v) in enumerate(meta.items()):
        layers.insert(i, c, v)
    fin = run.summary.get("final", {})
    s = {kk: v for kk, v in a.summary.items() if not isinstance(v, dict | list)}
    row = {**meta, **s, **net_columns(a.layers, float(m.leak or math.nan), int(run.task.bn_rank
                                                                              or 0)),
           "rel_fit_train": fin.get("rel_fit", math.nan),
           "rel_test_error": fin.get("rel_test_error", math.nan)}
    return layers, row, a.weight_spectra, a.rep_spectra


def net_columns(t: pd.DataFrame, leak: float, k: int) -> dict[str, float]:
    r"""The claims' own numbers of one net's layer table ``t``:

    - ``potential_variation``: spread of the potential over the interior layers over its
      median (prediction 1: the parts "vary a lot");
    - ``speed_ends``: mean of ``speed_K`` over the first and the last layer; ``speed_middle``:
      its median over :func:`~bnstruct.conventions.middle_layers` (prediction 3);
    - ``speed_tracking``: median over the interior layers of
      :math:`|\|\dot A\|_K - \tilde L\sqrt{\max(\mathrm{COI}_{in} - \min\mathrm{COI}, 0)}|
      / \|\dot A\|_K` (reported);
    - ``mid_rank_fraction`` / ``mid_wgap_fraction``: the share of middle layers whose
      ``rep_energy_rank`` / ``w_gap_rank`` is ``k`` (prediction 4);
    - ``rho_outer``: the share of the layer steps in the first and last quarter of the layers
      (``l <= L/4`` or ``l > 3L/4``; 1/2 for equal steps: prediction 6)."""
    from ..conventions import interior_layers, middle_layers

    L = len(t)
    mid = t[t["layer"].isin(middle_layers(L))]
    inner = t[t["layer"].isin(interior_layers(L))]
    sp = t["speed_K"].to_numpy(float)
    pred = leak * np.sqrt(np.maximum(inner["coi_in"] - t["coi"].min(), 0.0))
    track = np.abs(inner["speed_K"] - pred) / inner["speed_K"].where(inner["speed_K"] > 0)
    outer = (t["layer"] <= L / 4) | (t["layer"] > 3 * L / 4)
    pot = inner["potential"].to_numpy(float)
    return {"potential_variation": float((pot.max() - pot.min()) / np.median(pot))
            if pot.size and np.median(pot) > 0 else math.nan,
            "speed_ends": float((sp[0] + sp[-1]) / 2),
            "speed_middle": float(mid["speed_K"].median()),
            "speed_tracking": float(track.median()),
            "mid_rank_fraction": float((mid["rep_energy_rank"] == k).mean()),
            "mid_wgap_fraction": float((mid["w_gap_rank"] == k).mean()),
            "rho_outer": float(t.loc[outer, "rho"].sum() / t["rho"].sum())}


def leaky_measure(cfg: LeakyConfig, runs: Sequence[Run], *, memo: Memo | None = None
                  ) -> LeakyResult:
    """One :func:`~bnstruct.diagnostics.leaky_analysis` per run (float64; shared through
    ``memo`` by run directory); the runs must have completed."""
    require_status(runs)
    memo = memo if memo is not None else Memo()
    parts = [memo.get(("leaky-net", str(r.path)), partial(_net, r)) for r in runs]
    return LeakyResult(cfg.k, pd.concat([p[0] for p in parts], ignore_index=True),
                       pd.DataFrame([p[1] for p in parts]),
                       {p[1]["run"]: (p[2], p[3]) for p in parts})


def at_leak(nets: pd.DataFrame, leak: float) -> pd.DataFrame:
    """The equal-steps nets at ``leak``."""
    return nets[(nets["leak"] == leak) & ~nets["adaptive"].astype(bool)]


def leak_label(leak: float) -> str:
    return f"Lt = {leak:g}"
