"""Small statistics of the claims: slopes with standard errors (:func:`bnstruct.theory.slope_fit`,
the one least-squares fit), means with standard errors, and the "almost all layers" rule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..theory import slope_fit

__all__ = ["loglog_fit", "slope_fit", "mean_se", "fmt_mean_se", "ON_MIN", "MAX_OFF_GROWTH",
           "NO_FIT", "AlmostAll", "almost_all"]


#: "almost all layers" at finite depth (claims 3 and 4; docs/theory.md, section 5, reads it as
#: a limit: the number of layers where a statement fails stays bounded as L grows). The
#: smallest fraction of a net's layers that must satisfy it at the deepest depth: up to a
#: quarter of the layers (the ends, where the net does its nonlinear work in more dimensions)
#: may fail. Fixed before any v2 run.
ON_MIN = 0.75
#: the count of failing layers may grow by at most this many per added layer (least-squares
#: slope over every net + 2 standard errors): a constant fraction 1 - ON_MIN of the layers
#: failing at every depth would reach it, a bounded count has slope ~0
MAX_OFF_GROWTH = 0.25
#: a net whose relative train error is at least this fits nothing (the zero function has 1):
#: it is no net of any rank, and never counts toward a pass (docs/theory.md#regime-map)
NO_FIT = 0.5


@dataclass(frozen=True)
class AlmostAll:
    """The "almost all layers" check of one statement over a sweep (:func:`almost_all`)."""

    slope: float
    slope_err: float
    deepest: int
    deepest_min_fraction: float
    growth_ok: bool
    deepest_ok: bool

    @property
    def passed(self) -> bool:
        return self.growth_ok and self.deepest_ok

    def describe(self) -> str:
        return (f"slope of the count vs L {self.slope:+.3f} ± {self.slope_err:.3f}; smallest "
                f"fraction at L = {self.deepest}: {self.deepest_min_fraction:.2f}")


def almost_all(nets: pd.DataFrame, off: str = "off", fraction: str = "on_fraction"
               ) -> AlmostAll:
    """Judge "almost all layers" from one row per net (``depth``, the count of failing layers
    ``off`` and the passing ``fraction``): the count does not grow with L (least-squares slope
    over every net + 2 SE < :data:`MAX_OFF_GROWTH`; with < 3 nets the error is unknown and the
    check fails) and every net at the deepest depth has ``fraction >=`` :data:`ON_MIN`."""
    slope, se = slope_fit(nets["depth"], nets[off])
    growth_ok = bool(np.isfinite(slope) and np.isfinite(se)
                     and slope + 2 * se < MAX_OFF_GROWTH)
    L = int(nets["depth"].max())
    fr = float(nets.loc[nets["depth"] == L, fraction].min(skipna=False))  # NaN fails
    return AlmostAll(slope, se, L, fr, growth_ok, bool(fr >= ON_MIN))


def loglog_fit(x: Any, y: Any) -> tuple[float, float]:
    """Least-squares slope of log y against log x and its standard error (nan with < 2
    points, one distinct x or y <= 0; the error is nan with < 3 points). Repeated x (seeds)
    are fine."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.any(x <= 0) or np.any(y <= 0):
        return float("nan"), float("nan")
    return slope_fit(np.log(x), np.log(y))


def mean_se(v: Any) -> tuple[float, float]:
    """Mean and standard error of the mean (``std(ddof=1) / sqrt(n)``; nan for n < 2)."""
    a = np.asarray(v, dtype=float).ravel()
    if a.size == 0:
        return float("nan"), float("nan")
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")
    return float(a.mean()), se


def fmt_mean_se(v: Any, spec: str = ".3g") -> str:
    """``"m ± se"`` over seeds, or ``"m"`` for one seed."""
    m, se = mean_se(v)
    return f"{m:{spec}}" if not math.isfinite(se) else f"{m:{spec}} ± {se:{spec}}"
