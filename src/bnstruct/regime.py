"""The regime map (docs/theory.md#regime-map): where, over depth x penalty ``lam`` (the rank
cost of a direction is ``lam L``), deep L2-regularized nets keep the task's rank and carry the
bottleneck structure.

Public names of :mod:`bnstruct.experiments._regime` (one implementation; the reproduce
finding ``regime-map`` and ``bnstruct regime`` use it)::

    import bnstruct as bn
    from bnstruct.regime import RegimeGrid, regime_map
    from bnstruct.experiments import get_config

    grid = RegimeGrid(get_config("norm-vs-depth", "quick"), lams=(0.0025, 0.01, 0.04))
    m = regime_map(grid, "runs")          # trains (or reuses) every cell's nets
    m.cells                               # one row per (depth, lam): counts, means, SE
    m.figure("regime.png", protocol=0.01)
"""

from .experiments._regime import (
    NO_FIT,
    REGIMES,
    RegimeGrid,
    RegimeMap,
    classify,
    collapse_boundary,
    regime_cells,
    regime_map,
    regime_table,
)

__all__ = ["NO_FIT", "REGIMES", "RegimeGrid", "RegimeMap", "classify", "regime_table",
           "regime_cells", "collapse_boundary", "regime_map"]
