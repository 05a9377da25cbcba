r"""Leaky finding (`leaky-adaptive-steps`, THEORY 7 prediction 6): adaptive layer steps
:math:`\rho_\ell \propto 1/c_\ell`, :math:`c_\ell = \|A_\ell - A_{\ell-1}\| / (\rho_\ell
\|A_\ell\|)`, re-set every ``adapt_every`` training steps, move layers to where the
representation moves fast (the ends); the paper reports a small but consistent gain in test
error. Reported (a finding): the test error of equal and adaptive steps at one leak (mean ±
SE over seeds and the paired difference) and the share of the steps in the outer quarters
of the layers (1/2 for equal steps)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..store import Run
from ._leaky import LEAKY, LeakyConfig, LeakyResult, adaptive_plan, leaky_measure
from ._records import Claim, Kind, Memo
from ._statistics import fmt_mean_se

NAME = "leaky-adaptive-steps"
KIND: Kind = "finding"

CONFIGS = LEAKY


def statement(cfg: LeakyConfig) -> str:
    return (f"on {cfg.describe()}: at Lt = {cfg.adaptive_leak:g}, layer steps re-set every "
            f"{cfg.adapt_every} training steps by rho_l ~ 1/c_l against equal steps: the "
            "test error and where the layers go")


def plan(cfg: LeakyConfig) -> list[RunConfig]:
    return adaptive_plan(cfg)


def measure(cfg: LeakyConfig, runs: Sequence[Run], *, memo: Memo | None = None
            ) -> LeakyResult:
    return leaky_measure(cfg, runs, memo=memo)


def verdict(res: LeakyResult, cfg: LeakyConfig) -> Claim:
    n = res.nets[res.nets["leak"] == cfg.adaptive_leak].sort_values("seed")
    eq, ad = n[~n["adaptive"].astype(bool)], n[n["adaptive"].astype(bool)]
    te, ta = eq["rel_test_error"].to_numpy(float), ad["rel_test_error"].to_numpy(float)
    ok = len(eq) == len(ad) == len(cfg.seeds) and bool(np.isfinite([*te, *ta]).all())
    diff = ta - te if ok else np.array([np.nan])
    outer = ad["rho_outer"].to_numpy(float)
    gain = int((diff < 0).sum())
    return Claim(
        NAME, statement(cfg),
        key=(f"test error equal {fmt_mean_se(te)}, adaptive {fmt_mean_se(ta)} (adaptive - "
             f"equal {fmt_mean_se(diff)}); outer-quarter share of the steps "
             f"{fmt_mean_se(outer, '.2f')}"),
        bound="(finding: reported; equal steps put 0.5 of the steps in the outer quarters)",
        checked=("Nets with adaptive layer steps are compared with the same seeds' "
                 "equal-step nets at one leak: their relative test error, and how much of "
                 "the depth the adaptive steps give to the first and last quarter of layers."),
        why="" if ok else "a run is missing or its test error is not finite",
        measured=(f"relative test error equal {fmt_mean_se(te)}, adaptive {fmt_mean_se(ta)}; "
                  f"adaptive lower for {gain} of {diff.size} seeds; share of the layer "
                  f"steps in the outer quarters: {fmt_mean_se(outer, '.2f')} (equal: 0.50)"),
        expected="more layers near the ends (share < 0.5 of p per layer there: smaller "
                 "steps); a small but consistent gain in test error (the paper)",
        tolerance="(finding)", passed=ok, kind=KIND,
        values={"leak": cfg.adaptive_leak, "test_equal": te.tolist(),
                "test_adaptive": ta.tolist(), "rho_outer": outer.tolist(),
                "final_steps": {str(int(s)): res.layers.loc[
                    (res.layers["run"] == r), "rho"].tolist()
                    for s, r in zip(ad["seed"], ad["run"], strict=True)}},
        note="the weights are kept when the steps are re-set (the function jumps a little); "
             "the history's layer_steps column records every re-set")


CAPTIONS = {"leaky_adaptive_steps": (
    "Left: the final layer steps rho_l of the adaptive nets (every seed) against the layer, "
    "and the equal steps 1/L: smaller steps where the representation moves fast put more "
    "layers there. Right: the relative test error of equal and adaptive steps (mean and "
    "standard error over the seeds, each seed a dot).")}


def figures(res: LeakyResult, figdir: Path) -> list[Path]:
    from ._leaky_figures import adaptive_figure

    leak = float(res.nets.loc[res.nets["adaptive"].astype(bool), "leak"].iloc[0])
    return [adaptive_figure(res.layers, res.nets, leak, figdir / "leaky_adaptive_steps.png")]
