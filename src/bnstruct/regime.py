"""The regime map (docs/theory.md#regime-map): where, over depth x rank cost ``lam L``, deep
L2-regularized nets keep the task's rank and carry the bottleneck structure.

Public names of :mod:`bnstruct.experiments._regime` (one implementation; the reproduce
finding ``regime-map`` and ``bnstruct regime`` use it)::

    import bnstruct as bn
    from bnstruct.regime import RegimeGrid, regime_map
    from bnstruct.experiments import get_config

    grid = RegimeGrid(get_config("norm-vs-depth", "quick"), lam_depths=(0.05, 0.2, 0.8))
    m = regime_map(grid, "runs")          # trains (or reuses) every cell's nets
    m.cells                               # one row per (depth, lam L): counts, means, SE
    m.figure("regime.png", protocol=0.2)
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
