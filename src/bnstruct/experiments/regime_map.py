r"""Finding `regime-map`: where over depth x rank cost :math:`\Lambda = \lambda L` the composite
task's nets keep its rank k, carry the weight structure, and approach
:math:`\|\theta\|^2 = kL` (:mod:`bnstruct.regime`, docs/theory.md#regime-map).

It is the evidence for the depth sweep's protocol (claims 2-5 and 9 read the sweep at
``lam = Lambda_p / L``): the grid's column at :math:`\Lambda_p` *is* that sweep (the same run
configs, trained once). The map has no prediction to meet; it checks one thing that can
fail: **the protocol's column lies below the collapse boundary**, every net at every depth
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


def _grid(mode: str, lam_depths: tuple[float, ...], depths: tuple[int, ...] | None = None
          ) -> RegimeGrid:
    sw = SWEEPS[mode]
    assert sw.lam_depth is not None and sw.lam_depth in lam_depths, mode  # the protocol column
    return RegimeGrid(sw, lam_depths, depths)


#: per mode: the sweep's protocol column lam L = Lambda_p and columns a factor 4 away (quick:
#: on both sides, the unstructured and the collapsed one, at the sweep's shallowest and
#: deepest depths; full: the collapse side only, at the full sweep's end depths, which is what
#: the 60-minute CPU budget leaves: one width-200 depth-25 net trains in ~5 core-minutes)
CONFIGS = {
    "smoke": _grid("smoke", (0.05, 0.2)),
    "quick": _grid("quick", (0.05, 0.2, 0.8), depths=(8, 20)),
    "full": _grid("full", (0.2, 0.8), depths=(10, 25)),
}


def protocol(cfg: RegimeGrid) -> float:
    """The protocol's lam L (the sweep's ``lam_depth``)."""
    assert cfg.sweep.lam_depth is not None
    return float(cfg.sweep.lam_depth)


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
    col = nets[nets["lam_depth"] == lp]
    lost = col[col["regime"].isin(("no fit", "lower rank"))]
    passed = bool(len(col) and lost.empty)
    per = "; ".join(
        f"lam L={ld:g}: " + ", ".join(
            f"L={int(r.depth)} {int(r.found_k)}/{int(r.n)} rank {k} ({int(r.n_structured)} "
            f"structured), on {r.on_fraction:.2f}, norm2/kL {r.norm2_kL:.2f}, fit "
            f"{r.rel_fit:.2g}" for r in g.itertuples(index=False))
        for ld, g in cells.groupby("lam_depth"))
    bnd = ", ".join(f"L={int(r.depth)}: " + (f"{r.collapse_at:g}" if r.collapse_at == r.collapse_at
                                             else "none")
                    for r in res.boundary.itertuples(index=False))
    structured = int((col["regime"] == "structured").sum())
    return Claim(
        NAME, statement(cfg), measured=f"{per}; collapse boundary (smallest lam L that loses "
                                       f"rank {k} in some seed): {bnd}",
        key=(f"protocol lam L = {lp:g}: {len(col) - len(lost)}/{len(col)} nets keep rank {k} "
             f"({structured} structured); collapse at lam L: {bnd}"),
        bound=f"(finding) protocol column: every net rank {k}, fits",
        checked=(f"Over a grid of depth x lam L the composite task's nets were trained with the "
                 f"sweep's recipe; the protocol's lam L = {lp:g} must keep rank {k} at every "
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
    "The regime map: depth L (columns) x rank cost lam L (rows, lam = lam L / L), one cell per "
    "pair, 3 seeds each. Left: the learned bottleneck rank (mean; text: seeds that kept the "
    "task's rank k). Middle: the share of layers whose weights carry the structure (k singular "
    "values near 1, the rest small). Right: ||theta||^2 / (kL), whose limit is 1. Red: the "
    "collapse boundary (above it some seed loses rank k or fits nothing); dashed: the "
    "protocol's lam L, the column claims 2-5 read.")}


def figures(res: RegimeMap, figdir: Path) -> list[Path]:
    return [res.figure(figdir / "regime_map.png", protocol=protocol(res.grid))]


__all__ = ["NAME", "KIND", "CONFIGS", "statement", "plan", "measure", "verdict", "figures",
           "CAPTIONS", "protocol"]
