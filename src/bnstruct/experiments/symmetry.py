r"""Claim 8 (`symmetry`): on the ``symmetry`` task (:math:`y = h(\sqrt{x_1^2+x_2^2}, x_3)`,
invariant under rotations about the third axis) the bottleneck layer's representation
has effective rank 2, is invariant under those rotations, and its coordinates determine the
two invariants (THEORY 1, prediction 8).

- Bottleneck layer: the hidden layer (``l < L``) among the middle layers with the smallest
  ``rep_erank_participation`` in :func:`bnstruct.analyze`'s table (participation ratio of the
  centered representation on the training inputs; middle: ``L/4 < l <= 3L/4``).
- Invariance: held-out inputs rotated about the axis by a uniform random angle per point;
  relative change :math:`\|a(Rx) - a(x)\|_F / \|a(x) - \bar a\|_F`. The same for a Haar
  random rotation of :math:`\mathbb R^3` (which changes the invariants) for comparison.
- Invariants: a 10-nearest-neighbour regressor from the layer's coordinates (fitted on the
  training points) predicts :math:`(r, x_3)` of held-out points; :math:`R^2` of each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import ModelSpec, RunConfig
from ..store import Run
from ..training import default_recipe
from ._common import Claim, Kind, Memo, _to64, net_layers, require_status, run_config, task_spec

NAME = "symmetry"
KIND: Kind = "claim"
RANK = "rep_erank_participation"
RANK_TOL = 0.5
MAX_CHANGE = 0.05
MIN_R2 = 0.9


@dataclass(frozen=True)
class Config:
    depth: int = 16
    width: int = 64
    n_train: int = 256
    lam: float = 0.01  # unit-scale data: as the composite sweep (was 0.02 at the old scale)
    steps: int = 8000
    seed: int = 0


CONFIGS = {"smoke": Config(depth=4, width=16, n_train=64, steps=300),
           "quick": Config(),
           "full": Config(depth=25, width=200, n_train=1000, lam=5e-3, steps=60000)}


def statement(cfg: Config) -> str:
    return (f"on symmetry (a ReLU MLP of depth {cfg.depth}, width {cfg.width}) the bottleneck "
            f"layer's representation has effective rank (participation ratio, centered) 2 within "
            f"{RANK_TOL:g}, is invariant under rotations about the symmetry axis (relative change "
            f"<= {100 * MAX_CHANGE:g}%, versus a random rotation of the input space for "
            "comparison), and its coordinates determine the two invariants (held-out R^2 >= "
            f"{MIN_R2:g} with a 10-nearest-neighbour regressor)")


def plan(cfg: Config) -> list[RunConfig]:
    return [run_config(task_spec("symmetry", n_train=cfg.n_train),
                       ModelSpec("mlp", cfg.width, cfg.depth),
                       default_recipe(cfg.lam, cfg.steps), seed=cfg.seed)]


@dataclass(frozen=True)
class Result:
    layers: pd.DataFrame
    layer: int
    rank: float
    change_axis: float
    change_random: float
    r2: tuple[float, float]
    pca: np.ndarray          # [N_test, 2] PCA coordinates of the bottleneck layer
    invariants: np.ndarray   # [N_test, 2] (r, x3)


def _rot_axis(n: int, g: torch.Generator) -> torch.Tensor:
    phi = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    c, s = torch.cos(phi), torch.sin(phi)
    R = torch.zeros(n, 3, 3, dtype=torch.float64)
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1], R[:, 2, 2] = c, -s, s, c, 1.0
    return R


def _rot_haar(n: int, g: torch.Generator) -> torch.Tensor:
    Q, Rr = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    Q = Q * torch.sign(torch.diagonal(Rr, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(Q)
    Q[:, :, 0] *= det[:, None]
    return Q


def measure(cfg: Config, runs: Sequence[Run], *, memo: Memo | None = None) -> Result:
    from sklearn.neighbors import KNeighborsRegressor

    from ..diagnostics import representations

    require_status(runs)
    (r,) = runs
    m = _to64(r.model)
    X, Xt = r.task.X.to(torch.float64), r.task.X_test.to(torch.float64)
    layers, _ = net_layers(r, 2)
    hidden = layers[(layers["layer"] < cfg.depth) & layers["middle"]]
    if hidden.empty:
        hidden = layers[layers["layer"] < cfg.depth]
    best = hidden.loc[hidden[RANK].idxmin()]
    l = int(best["layer"])

    def rep(Z: torch.Tensor) -> torch.Tensor:
        return representations(m, Z)[l - 1]

    g = torch.Generator().manual_seed(cfg.seed + 1)
    a = rep(Xt)
    spread = float((a - a.mean(0)).norm())
    ch_axis = float((rep(torch.einsum("nij,nj->ni", _rot_axis(len(Xt), g), Xt)) - a).norm()
                    / spread)
    ch_rand = float((rep(torch.einsum("nij,nj->ni", _rot_haar(len(Xt), g), Xt)) - a).norm()
                    / spread)
    inv = r.task.meta["invariants"].numpy()
    inv_t = r.task.meta["invariants_test"].numpy()
    a_tr = rep(X).numpy()
    reg = KNeighborsRegressor(n_neighbors=10).fit(a_tr, inv)
    pred = reg.predict(a.numpy())
    r2 = tuple(float(1 - ((pred[:, j] - inv_t[:, j]) ** 2).sum()
                     / ((inv_t[:, j] - inv_t[:, j].mean()) ** 2).sum()) for j in range(2))
    ac = a - a.mean(0)
    V = torch.linalg.svd(ac, full_matrices=False).Vh[:2]
    return Result(layers, l, float(best[RANK]), ch_axis, ch_rand, (r2[0], r2[1]),
                  (ac @ V.T).numpy(), inv_t)


def verdict(res: Result, cfg: Config) -> Claim:
    rank_ok = abs(res.rank - 2) <= RANK_TOL
    inv_ok = res.change_axis <= MAX_CHANGE
    r2_ok = min(res.r2) >= MIN_R2
    values: dict[str, Any] = {"layer": res.layer, "rank": res.rank,
                              "change_axis": res.change_axis, "change_random": res.change_random,
                              "r2_r": res.r2[0], "r2_x3": res.r2[1], "rank_ok": rank_ok,
                              "invariance_ok": inv_ok, "r2_ok": r2_ok,
                              "layers": res.layers.to_dict("list")}
    return Claim(
        NAME, statement(cfg), kind=KIND,
        measured=(f"layer {res.layer}: effective rank {res.rank:.2f}; change under axis "
                  f"rotations {100 * res.change_axis:.1f}% (random rotations "
                  f"{100 * res.change_random:.1f}%); held-out R^2 r {res.r2[0]:.3f}, "
                  f"x3 {res.r2[1]:.3f}"),
        expected="rank 2, invariant, invariants recoverable",
        tolerance=(f"|rank - 2| <= {RANK_TOL:g}; change <= {100 * MAX_CHANGE:g}%; "
                   f"R^2 >= {MIN_R2:g} each"),
        passed=bool(rank_ok and inv_ok and r2_ok), values=values)


def figures(res: Result, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.symmetry_figure(res.pca, res.invariants, res.layer, res.layers,
                                  figdir / "symmetry.png")]

