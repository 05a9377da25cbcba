r"""Claim 1 (`linear`): deep linear nets trained with L2 reach the closed-form cost of their
own end-to-end matrix, and every layer's nonzero singular values are :math:`s_i(A)^{1/L}`.

docs/theory.md#linear-maps: :math:`R(A; L) = L \sum_i s_i(A)^{2/L}`, attained only by
balanced factors whose singular values are :math:`s_i(A)^{1/L}`. Any critical point of the
L2-regularized loss of a deep linear net is such a factorization of its end-to-end matrix
``A = W_L ... W_1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import ModelSpec, RunConfig
from ..models import DeepLinear
from ..store import Run
from ..training import Stage
from ._records import Claim, Kind, Memo, require_status, run_config, task_spec
from ._statistics import fmt_mean_se

NAME = "linear"
KIND: Kind = "claim"
COST_RTOL = 0.01
SV_RTOL = 0.02
MIN_DEPTHS = 3
#: singular values of the end-to-end matrix below this fraction of s_1 count as zero
RANK_RTOL = 1e-3


@dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (2, 4, 8)
    k: int = 3
    d: int = 20
    n_train: int = 256
    width: int = 20
    lam: float = 0.05
    #: when set, the penalty is lam_depth / L at depth L (the rank cost lam L fixed across
    #: depths, as in the sweep: docs/theory.md#regime-map); ``lam`` is then unused
    lam_depth: float | None = None
    lr: float = 3e-3
    #: the deepest depth ``lr`` was tuned at: deeper nets train at ``lr * lr_depth / L``
    #: (docs/theory.md#claim-linear: the end-to-end map moves by about the sum of its L layers'
    #: relative steps, so a fixed per-layer step moves it L times as fast; the same reason the
    #: stable GD step is c/L, claim 6)
    lr_depth: int = 8
    steps: int = 3000
    seeds: tuple[int, ...] = (0, 1, 2)

    def lam_at(self, L: int) -> float:
        return self.lam if self.lam_depth is None else self.lam_depth / L

    def lam_words(self) -> str:
        return (f"lam = {self.lam:g}" if self.lam_depth is None else
                f"lam = {self.lam_depth:g} / L")

    def stages(self, L: int) -> tuple[Stage, ...]:
        # Adam fits and prunes the unused directions fast; the low-lr Adam and plain-GD stages
        # settle on the regularized critical point (balanced, aligned factors).
        lam, f = self.lam_at(L), min(1.0, self.lr_depth / L)
        return (Stage("adam", self.lr * f, lam, self.steps),
                Stage("adam", self.lr * f / 10, lam, self.steps),
                Stage("gd", 0.02 * f, lam, self.steps))


CONFIGS = {
    "smoke": Config(depths=(2, 3, 4), d=8, k=2, width=8, n_train=64, steps=300, seeds=(0, 1)),
    "quick": Config(lam_depth=0.2),
    "full": Config(depths=(2, 4, 8, 12, 16), d=50, k=4, width=50, n_train=256, steps=5000,
                   lam_depth=0.2),
}


def statement(cfg: Config) -> str:
    return (f"deep linear nets (width {cfg.width}, depths {', '.join(map(str, cfg.depths))}, "
            f"a rank-{cfg.k} task in {cfg.d} dimensions, {cfg.lam_words()}) trained with L2 reach "
            f"linear_cost of their end-to-end matrix (within {100 * COST_RTOL:g}%) and every "
            f"layer's nonzero singular values are s_i^(1/L) (within {100 * SV_RTOL:g}%), at "
            f">= {MIN_DEPTHS} depths")


def plan(cfg: Config) -> list[RunConfig]:
    """One deep linear net per (depth, seed), depth-major."""
    spec = task_spec("linear", k=cfg.k, d_in=cfg.d, d_out=cfg.d, n_train=cfg.n_train)
    return [run_config(spec, ModelSpec("linear", cfg.width, L), cfg.stages(L), seed=s)
            for L in cfg.depths for s in cfg.seeds]


@dataclass(frozen=True)
class Result:
    """``depths``: one row per net (depth, seed, param_norm2, linear_cost, cost_rel_err, rank);
    ``layers``: one row per (depth, seed, layer, i) with the singular value and its
    prediction."""

    depths: pd.DataFrame
    layers: pd.DataFrame


def measure(cfg: Config, runs: Sequence[Run], *, memo: Memo | None = None) -> Result:
    from ..theory import linear_cost

    require_status(runs)
    drows, lrows = [], []
    for r in runs:
        L = r.config.model.depth
        m = r.model.to(torch.float64)
        assert isinstance(m, DeepLinear), f"run {r.path} is not a deep linear net"
        A = m.end_to_end().numpy()
        s = np.linalg.svd(A, compute_uv=False)
        rank = int((s > RANK_RTOL * s[0]).sum())
        n2 = float(sum(float(W.detach().pow(2).sum()) for W in m.weights()))
        cost = linear_cost(A, L, rtol=RANK_RTOL)
        seed = r.config.seed
        drows.append({"depth": L, "seed": seed, "param_norm2": n2, "linear_cost": cost,
                      "cost_rel_err": abs(n2 - cost) / cost, "rank": rank,
                      "rel_fit": r.summary["final"].get("rel_fit")})
        pred = s[:rank] ** (1.0 / L)
        for l, W in enumerate(m.weights(), start=1):
            sw = np.linalg.svd(W.detach().numpy(), compute_uv=False)
            for i in range(rank):
                lrows.append({"depth": L, "seed": seed, "layer": l, "i": i + 1, "s": float(sw[i]),
                              "predicted": float(pred[i]),
                              "rel_err": abs(sw[i] - pred[i]) / pred[i]})
            if rank < sw.size:
                lrows.append({"depth": L, "seed": seed, "layer": l, "i": rank + 1,
                              "s": float(sw[rank]),
                              "predicted": 0.0, "rel_err": float("nan")})
    return Result(pd.DataFrame(drows), pd.DataFrame(lrows))


def verdict(res: Result, cfg: Config) -> Claim:
    d, lay = res.depths, res.layers
    nz = lay[lay["predicted"] > 0]
    worst_cost = float(d["cost_rel_err"].max()) if len(d) else float("nan")
    worst_sv = float(nz["rel_err"].max()) if len(nz) else float("nan")
    n_depths = int(d["depth"].nunique()) if len(d) else 0
    passed = bool(n_depths >= MIN_DEPTHS and worst_cost <= COST_RTOL and worst_sv <= SV_RTOL)
    per = ", ".join(f"L={int(L)}: {fmt_mean_se(100 * g['cost_rel_err'], '.2g')}%"
                    for L, g in d.groupby("depth")) if len(d) else "none"
    why = []
    if n_depths < MIN_DEPTHS:
        why.append(f"only {n_depths} depth(s) trained to a verdict (needs {MIN_DEPTHS})")
    if not worst_cost <= COST_RTOL:
        why.append(f"a net's squared norm is {100 * worst_cost:.2g}% off the closed-form cost "
                   f"(tolerance {100 * COST_RTOL:g}%): it did not reach the optimum")
    if not worst_sv <= SV_RTOL:
        bad = nz.loc[nz["rel_err"].idxmax()] if len(nz) else None
        where = f" at L = {int(bad['depth'])}" if bad is not None and "depth" in nz else ""
        why.append(f"layer singular values are up to {100 * worst_sv:.2g}% from s_i(A)^(1/L)"
                   f"{where} (tolerance {100 * SV_RTOL:g}%): the layers are not yet balanced")
    return Claim(
        NAME, statement(cfg), kind=KIND,
        key=(f"worst cost error {100 * worst_cost:.2g}%, singular values "
             f"{100 * worst_sv:.2g}%"),
        bound=f"<= {100 * COST_RTOL:g}% and <= {100 * SV_RTOL:g}%",
        checked=("Deep linear nets trained with weight decay reach the closed-form minimal "
                 "norm L sum_i s_i(A)^(2/L) of their end-to-end matrix A, with every layer's "
                 "singular values equal to s_i(A)^(1/L)."),
        why="; ".join(why) if not passed else "",
        measured=(f"worst |norm2 - cost|/cost {100 * worst_cost:.3g}% ({per}); worst layer "
                  f"singular value error {100 * worst_sv:.3g}% over {n_depths} depths, "
                  f"{len(d)} nets (every net judged; per depth mean ± SE over seeds)"),
        expected="norm2 = L sum s_i^(2/L); s_i(W_l) = s_i(A)^(1/L)",
        tolerance=f"cost <= {100 * COST_RTOL:g}%, singular values <= {100 * SV_RTOL:g}%, "
                  f">= {MIN_DEPTHS} depths",
        passed=passed,
        values={"depths": d.to_dict("list"), "worst_cost_rel_err": worst_cost,
                "worst_sv_rel_err": worst_sv})


CAPTIONS = {"linear_cost": (
    "Left: the squared parameter norm of every trained deep linear net (points, every seed) "
    "against depth, with the closed-form minimal cost L sum_i s_i(A)^(2/L) of its own "
    "end-to-end matrix A (line, mean over the seeds). Right: every layer's nonzero singular "
    "values against the prediction s_i(A)^(1/L), one colour per depth (dashed: equality).")}


def figures(res: Result, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.linear_cost_figure(res.depths, res.layers, figdir / "linear_cost.png")]

