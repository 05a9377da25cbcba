r"""The regime map: where, over depth x penalty, deep L2-regularized nets reach the
bottleneck regime (docs/theory.md#regime-map).

At a net of the depth expansion the objective is :math:`\text{fit} + \lambda (L R_0 + R_1 +
O(1/L))`: :math:`\lambda L` (``lam_depth``) is the price of one more latent direction, and it
grows with depth at a fixed ``lam`` until a lower rank is cheaper (prediction 7). A grid over
depth ``L`` x ``lam`` (one fixed ``lam`` per column, the way a depth sweep trains) with several
seeds per cell shows three things at once: where the learned function keeps the task's rank
``k`` (below the *collapse boundary*), where its weights carry the structure (``k`` singular
values near 1, the rest small, in almost all layers), and how close
:math:`\|\theta\|^2 / (kL)` is to its limit 1.

Per net (one row, :func:`regime_table`):

- ``learned_rank``: the bottleneck rank of the trained net
  (:func:`bnstruct.conventions.bottleneck_rank`, read from its weight spectra), next to
  ``jacobian_rank`` (the largest numerical rank of :math:`Jf(x)` over the training points)
  and ``rep_rank`` (median energy rank of the centered middle representations);
- ``rel_fit``: relative train error; a net with ``rel_fit >= NO_FIT = 0.5`` fits nothing;
- ``on_fraction``: the share of layers on the weight structure at the task's ``k``
  (:func:`bnstruct.experiments.weight_spectra.off_structure`);
- ``norm2_kL``: :math:`\|\theta\|^2 / (kL)`;
- ``regime``: ``no fit`` (``rel_fit >= NO_FIT``), ``lower rank`` / ``higher rank``
  (``learned_rank`` below / above ``k``), else ``structured`` (``on_fraction >= ON_MIN``) or
  ``unstructured``.

Per cell (:func:`regime_cells`): the count of seeds in each regime, means and standard errors.
Per depth (:func:`collapse_boundary`): the smallest ``lam`` of the grid at which some seed
loses the task's rank (``lower rank`` or ``no fit``), and its ``lam L``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..errors import ConfigError
from ..store import Run
from ._records import Memo
from ._statistics import NO_FIT, ON_MIN, mean_se
from ._sweep import SweepConfig, sweep_measure, sweep_plan

__all__ = ["NO_FIT", "REGIMES", "RegimeGrid", "RegimeMap", "classify", "regime_table",
           "regime_cells", "collapse_boundary", "regime_map"]

#: the regimes of a net, in the order of :func:`classify`'s tests
REGIMES = ("no fit", "lower rank", "higher rank", "unstructured", "structured")


@dataclass(frozen=True)
class RegimeGrid:
    """A depth x ``lam`` grid: the depth sweep ``sweep`` (task, width, recipe, seeds)
    repeated at each fixed penalty in ``lams``, on the depths ``depths`` (default: the
    sweep's). Every cell's run configs are exactly the sweep's at that ``lam``, so the column
    of the protocol's ``lam`` shares its runs (and store) with the protocol's claims."""

    sweep: SweepConfig
    lams: tuple[float, ...]
    depths: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        lds = tuple(self.lams)
        if not lds or any(not isinstance(v, int | float) or isinstance(v, bool) or not v > 0
                          or not np.isfinite(v) for v in lds) or len(set(lds)) != len(lds):
            raise ConfigError(f"lams must be distinct positive numbers, got {lds!r}")
        if self.depths is not None and len(set(self.depths)) < 2:
            raise ConfigError(f"a regime map needs >= 2 distinct depths, got {self.depths!r}")

    @property
    def k(self) -> int:
        return self.sweep.k

    def column(self, lam: float) -> SweepConfig:
        """The depth sweep of one ``lam`` (the grid's depths)."""
        return dataclasses.replace(self.sweep, lam=float(lam), lam_depth=None,
                                   depths=tuple(self.depths or self.sweep.depths))

    def columns(self) -> list[SweepConfig]:
        return [self.column(v) for v in sorted(self.lams)]

    def plan(self) -> list[RunConfig]:
        """Every run of the grid, column by column (ascending ``lam``), each column in
        :func:`~bnstruct.experiments._sweep.sweep_plan` order."""
        return [c for col in self.columns() for c in sweep_plan(col)]

    def describe(self) -> str:
        sw = self.column(self.lams[0])
        return (f"{sw.task} (k = {sw.k}), ReLU MLPs of width {sw.width} at depths "
                f"{', '.join(map(str, sorted(sw.depths)))} x lam = "
                f"{', '.join(f'{v:g}' for v in sorted(self.lams))}, "
                f"{len(sw.seeds)} seed(s) per cell, Adam lr {sw.adam_lr:.3g}, {sw.steps} steps"
                + (f" + {sw.steps_per_layer} per layer beyond L = {min(sw.depths)}"
                   if sw.steps_per_layer else ""))


def classify(rel_fit: float, learned_rank: int, on_fraction: float, k: int) -> str:
    """The regime of one net (module docstring); a NaN fit counts as ``no fit``."""
    if not rel_fit < NO_FIT:
        return "no fit"
    if learned_rank < k:
        return "lower rank"
    if learned_rank > k:
        return "higher rank"
    return "structured" if on_fraction >= ON_MIN else "unstructured"


def regime_table(grid: RegimeGrid, runs: Sequence[Run], *, memo: Memo | None = None
                 ) -> pd.DataFrame:
    """One row per net of ``grid.plan()`` (``runs``: its trained runs, in plan order): depth,
    lam, lam_depth (= lam L), seed, run, rel_fit, learned_rank, jacobian_rank, rep_rank,
    on_fraction, norm2_kL, param_norm2, regime. Every number in float64 from the stored
    weights (through the sweep's measurement, shared with the claims through ``memo``)."""
    from .weight_spectra import off_structure

    cols = grid.columns()
    sizes = [len(sweep_plan(c)) for c in cols]
    if len(runs) != sum(sizes):
        raise ConfigError(f"the grid has {sum(sizes)} runs, got {len(runs)}")
    memo = memo if memo is not None else Memo()
    k, rows, i = grid.k, [], 0
    for col, n in zip(cols, sizes, strict=True):
        res = sweep_measure(col, runs[i:i + n], memo=memo)
        i += n
        lay = res.layers.assign(off=off_structure(res.layers, k))
        for net in res.nets.itertuples(index=False):
            g = lay[lay["run"] == net.run]
            L = int(net.depth)
            on = 1.0 - float(g["off"].sum()) / L
            mid = g[g["middle"]]
            rank = int(net.bottleneck_rank)
            rows.append({"depth": L, "lam": col.lam, "lam_depth": col.lam * L,
                         "seed": int(net.seed), "run": net.run, "rel_fit": float(net.rel_fit),
                         "learned_rank": rank, "jacobian_rank": int(net.jacobian_rank),
                         "rep_rank": float(mid["rep_energy_rank"].median()),
                         "on_fraction": on, "norm2_kL": float(net.param_norm2) / (k * L),
                         "param_norm2": float(net.param_norm2),
                         "regime": classify(float(net.rel_fit), rank, on, k)})
    return pd.DataFrame(rows)


def regime_cells(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (depth, lam) cell of :func:`regime_table`: ``n`` seeds, the count in
    each regime (``n_structured``, ``n_no_fit`` ...), ``found_k`` (seeds that fit with the
    task's rank: structured or unstructured), the mean and standard error of
    ``learned_rank``, ``on_fraction``, ``norm2_kL`` and ``rel_fit``, and ``regime`` (the
    cell's most common regime, ties to the worse one in :data:`REGIMES` order)."""
    rows = []
    for (L, lam), g in table.groupby(["depth", "lam"], sort=True):
        counts = g["regime"].value_counts()
        row: dict[str, Any] = {"depth": int(L), "lam": float(lam),
                               "lam_depth": float(g["lam_depth"].iloc[0]), "n": len(g)}
        for r in REGIMES:
            row[f"n_{r.replace(' ', '_')}"] = int(counts.get(r, 0))
        row["found_k"] = row["n_structured"] + row["n_unstructured"]
        for c in ("learned_rank", "on_fraction", "norm2_kL", "rel_fit"):
            m, se = mean_se(g[c])
            row[c], row[f"{c}_se"] = m, se
        top = max(int(counts.get(r, 0)) for r in REGIMES)
        row["regime"] = next(r for r in REGIMES if int(counts.get(r, 0)) == top)
        rows.append(row)
    return pd.DataFrame(rows)


def collapse_boundary(table: pd.DataFrame) -> pd.DataFrame:
    """Per depth: ``collapse_at``, the smallest ``lam`` of the grid at which some seed loses
    the task's rank (``lower rank`` or ``no fit``; NaN when none does), its rank cost
    ``collapse_lam_depth = collapse_at * L``, and ``kept_below``, the largest ``lam`` below it
    (NaN when the smallest one already collapses)."""
    rows = []
    for L, g in table.groupby("depth", sort=True):
        lost = g.loc[g["regime"].isin(("lower rank", "no fit")), "lam"]
        at = float(lost.min()) if len(lost) else float("nan")
        below = g.loc[g["lam"] < at, "lam"] if np.isfinite(at) else g["lam"]
        rows.append({"depth": int(L), "collapse_at": at, "collapse_lam_depth": at * int(L),
                     "kept_below": float(below.max()) if len(below) else float("nan")})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class RegimeMap:
    """A measured regime map: ``nets`` (:func:`regime_table`), ``cells``
    (:func:`regime_cells`), ``boundary`` (:func:`collapse_boundary`) and its ``grid``."""

    grid: RegimeGrid
    nets: pd.DataFrame
    cells: pd.DataFrame
    boundary: pd.DataFrame

    @classmethod
    def from_runs(cls, grid: RegimeGrid, runs: Sequence[Run], *, memo: Memo | None = None
                  ) -> RegimeMap:
        nets = regime_table(grid, runs, memo=memo)
        return cls(grid, nets, regime_cells(nets), collapse_boundary(nets))

    def figure(self, path: str | Path, *, protocol: float | None = None) -> Path:
        """The map as a figure (:func:`bnstruct.plots.regime_figure`)."""
        from ..plots import regime_figure

        return regime_figure(self.cells, self.boundary, self.grid.k, Path(path),
                             protocol=protocol)


def regime_map(grid: RegimeGrid, store: str | Path, *, executor: Any = None,
               progress: Callable[[RunConfig], None] | None = None) -> RegimeMap:
    """Train (or reuse from ``store``) every run of ``grid`` with
    :func:`bnstruct.executors.execute` and measure the map."""
    from ..executors import execute

    runs = execute(grid.plan(), store, executor=executor, progress=progress)
    return RegimeMap.from_runs(grid, runs)
