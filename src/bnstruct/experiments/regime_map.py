r"""Finding `regime-map`: where over depth x penalty ``lam`` (rank cost :math:`\lambda L` per
latent direction) the composite task's nets keep its rank k, carry the weight structure, and
approach :math:`\|\theta\|^2 = kL` (:mod:`bnstruct.regime`, docs/theory.md#regime-map).

It is the evidence for the depth sweep's protocol (claims 2-5 and 9 read the sweep at one
fixed ``lam``): the grid's column at that ``lam`` *is* the sweep (the same run configs,
trained once), and the column at 4 times it shows where depth makes a lower rank cheaper.
The map has no prediction to meet; it checks one thing that can fail: **the protocol's
column lies below the collapse boundary**, every net at every depth
fits (``rel_fit < NO_FIT``) with the task's rank (``learned_rank >= k``). A collapse at the
protocol would make claims 2-5 read nets the theorem does not describe (a lower-rank
function is a different minimum: prediction 7), so it is reported as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config import RunConfig
from ..store import Run
from ._records import Claim, Kind, Memo
from ._regime import NO_FIT, RegimeGrid, RegimeMap
from ._sweep import SWEEPS

NAME = "regime-map"
KIND: Kind = "finding"


def _grid(mode: str, factors: tuple[float, ...], depths: tuple[int, ...] | None = None
          ) -> RegimeGrid:
    """The sweep of ``mode`` at ``lam * f`` for each factor ``f`` (1: the protocol column)."""
    sw = SWEEPS[mode]
    assert sw.lam_depth is None and 1 in factors, mode  # a fixed lam, the protocol's column
    return RegimeGrid(sw, tuple(sw.lam * f for f in factors), depths)


#: per mode: the sweep's protocol column (its fixed lam) and the column at 4 lam, at the
#: sweep's shallowest and deepest depths: where more depth or more penalty makes a lower rank
#: cheaper (sized to the quick budget and to what the 60-minute full CPU budget leaves: one
#: width-200 depth-25 net trains in ~5 core-minutes). `bnstruct regime` maps any grid.
CONFIGS = {
    "smoke": _grid("smoke", (1, 4)),
    "quick": _grid("quick", (1, 4), depths=(8, 20)),
    "full": _grid("full", (1, 4), depths=(10, 25)),
}


def protocol(cfg: RegimeGrid) -> float:
    """The protocol's ``lam`` (the sweep's)."""
    return float(cfg.sweep.lam)


def statement(cfg: RegimeGrid) -> str:
    return (f"regime map on {cfg.describe()}: per cell the seeds that keep the task's rank, "
            "the share of layers on the weight structure and ||theta||^2 / (kL); the "
            f"collapse boundary per depth; checked: the protocol's column lam L = "
            f"{protocol(cfg):g} keeps rank {cfg.k} and fits (relative train error < "
            f"{NO_FIT:g}) in every net")


def plan(cfg: RegimeGrid) -> list[RunConfig]:
    return cfg.plan()


def measure(cfg: RegimeGrid, runs: Sequence[Run], *, memo: Memo | None = None) -> RegimeMap:
    return RegimeMap.from_runs(cfg, runs, memo=memo)


def verdict(res: RegimeMap, cfg: RegimeGrid) -> Claim:
    k, lp = cfg.k, protocol(cfg)
    cells, nets = res.cells, res.nets
    col = nets[nets["lam"] == lp]
    lost = col[col["regime"].isin(("no fit", "lower rank"))]
    passed = bool(len(col) and lost.empty)
    per = "; ".join(
        f"lam={ld:g}: " + ", ".join(
            f"L={int(r.depth)} {int(r.found_k)}/{int(r.n)} rank {k} ({int(r.n_structured)} "
            f"structured), on {r.on_fraction:.2f}, norm2/kL {r.norm2_kL:.2f}, fit "
            f"{r.rel_fit:.2g} (lam L {r.lam_depth:.2g})" for r in g.itertuples(index=False))
        for ld, g in cells.groupby("lam"))
    bnd = ", ".join(f"L={int(r.depth)}: " + (f"lam {r.collapse_at:g} (lam L "
                                             f"{r.collapse_lam_depth:.2g})"
                                             if r.collapse_at == r.collapse_at else "none")
                    for r in res.boundary.itertuples(index=False))
    structured = int((col["regime"] == "structured").sum())
    return Claim(
        NAME, statement(cfg), measured=f"{per}; collapse boundary (smallest lam that loses "
                                       f"rank {k} in some seed): {bnd}",
        key=(f"protocol lam = {lp:g}: {len(col) - len(lost)}/{len(col)} nets keep rank >= {k} "
             f"({structured} structured); collapse at: {bnd}"),
        bound=f"(finding) protocol column: every net rank {k}, fits",
        checked=(f"Over a grid of depth x lam the composite task's nets were trained with the "
                 f"sweep's recipe; the protocol's lam = {lp:g} must keep rank {k} at every "
                 "depth and seed (below the collapse boundary)."),
        why="" if passed else (
            f"{len(lost)} net(s) of the protocol's column lost rank {k} or fit nothing: "
            + ", ".join(f"L={int(r.depth)} seed {int(r.seed)} ({r.regime}, rank "
                        f"{int(r.learned_rank)}, fit {r.rel_fit:.2g})"
                        for r in lost.itertuples(index=False))) if len(col) else
        "the grid has no protocol column",
        expected=f"(finding) rank {k} below the collapse boundary",
        tolerance=f"protocol column: learned_rank >= {k} and rel_fit < {NO_FIT:g}, every net",
        passed=passed, kind=KIND,
        values={"protocol": lp, "nets": nets.to_dict("list"), "cells": cells.to_dict("list"),
                "boundary": res.boundary.to_dict("list")})


CAPTIONS = {"regime_map": (
    "The regime map: depth L (columns) x penalty lam (rows; the rank cost of a direction is "
    "lam L), one cell per pair, 3 seeds each. Left: the learned bottleneck rank (mean; text: "
    "seeds that kept the task's rank k). Middle: the share of layers whose weights carry the "
    "structure (k singular "
    "values near 1, the rest small). Right: ||theta||^2 / (kL), whose limit is 1. Red: the "
    "collapse boundary (above it some seed loses rank k or fits nothing); dashed: the "
    "protocol's lam, the column claims 2-5 read.")}


def figures(res: RegimeMap, figdir: Path) -> list[Path]:
    return [res.figure(figdir / "regime_map.png", protocol=protocol(res.grid))]


__all__ = ["NAME", "KIND", "CONFIGS", "statement", "plan", "measure", "verdict", "figures",
           "CAPTIONS", "protocol"]
