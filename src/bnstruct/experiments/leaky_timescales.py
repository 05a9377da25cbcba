r"""Leaky claim 3 (`leaky-timescales`, THEORY 7 prediction 3): a separation of timescales,
the representation moves at speed :math:`\|\partial_p A\|_K` of order ``Lt`` near the input
and output and of order 1 in the middle. Judged as limits over the leaks: the speed at the
ends grows with ``Lt`` (log-log slope beyond :data:`END_SLOPE_MIN`) and the middle's does
not (slope below :data:`MID_SLOPE_MAX`), both with 2 standard errors. How closely the speed
tracks :math:`\tilde L\sqrt{\mathrm{COI} - \min\mathrm{COI}}` (what a constant H implies)
is reported."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..store import Run
from ._leaky import LEAKY, LeakyConfig, LeakyResult, at_leak, leaky_measure, leaky_plan
from ._records import Claim, Kind, Memo
from ._statistics import fmt_mean_se, loglog_fit

NAME = "leaky-timescales"
KIND: Kind = "claim"
#: the ends' speed grows like Lt (slope 1): its log-log slope - 2 SE at least this
END_SLOPE_MIN = 0.5
#: the middle's speed is O(1) (slope 0): its log-log slope + 2 SE at most this
MID_SLOPE_MAX = 0.5

CONFIGS = LEAKY


def statement(cfg: LeakyConfig) -> str:
    return (f"on {cfg.describe()}: ||dA/dp|| is of order Lt near p = 0 and p = 1 and of "
            "order 1 in the middle layers")


def plan(cfg: LeakyConfig) -> list[RunConfig]:
    return leaky_plan(cfg)


def measure(cfg: LeakyConfig, runs: Sequence[Run], *, memo: Memo | None = None
            ) -> LeakyResult:
    return leaky_measure(cfg, runs, memo=memo)


def verdict(res: LeakyResult, cfg: LeakyConfig) -> Claim:
    eq = res.nets[~res.nets["adaptive"].astype(bool)]
    es, ese = loglog_fit(eq["leak"], eq["speed_ends"])
    ms, mse = loglog_fit(eq["leak"], eq["speed_middle"])
    end_ok = bool(np.isfinite(es + ese) and es - 2 * ese >= END_SLOPE_MIN)
    mid_ok = bool(np.isfinite(ms + mse) and ms + 2 * mse <= MID_SLOPE_MAX)
    ok = end_ok and mid_ok
    top = max(cfg.leaks)
    tr = at_leak(eq, top)["speed_tracking"]
    per = "; ".join(f"Lt={Lt:g}: ends {fmt_mean_se(at_leak(eq, Lt)['speed_ends'])}, middle "
                    f"{fmt_mean_se(at_leak(eq, Lt)['speed_middle'])}" for Lt in cfg.leaks)
    why = []
    if not end_ok:
        why.append(f"the ends' speed grows with slope {es:.2f} ± {ese:.2f} in Lt (needs "
                   f"slope - 2 SE >= {END_SLOPE_MIN:g})")
    if not mid_ok:
        why.append(f"the middle's speed grows with slope {ms:.2f} ± {mse:.2f} in Lt (needs "
                   f"slope + 2 SE <= {MID_SLOPE_MAX:g})")
    return Claim(
        NAME, statement(cfg),
        key=f"log-log slope in Lt: ends {es:+.2f} ± {ese:.2f}, middle {ms:+.2f} ± {mse:.2f}",
        bound=f"ends - 2 SE >= {END_SLOPE_MIN:g}; middle + 2 SE <= {MID_SLOPE_MAX:g}",
        checked=("The speed ||dA/dp||_K of the first and last layers grows in proportion to "
                 "Lt over the leaks while that of the middle layers stays of order 1 (log-log "
                 "slopes over every net, with 2 standard errors)."),
        why="; ".join(why) if not ok else "",
        measured=(f"{per}; |speed - Lt sqrt(COI - min COI)| / speed, median over the interior "
                  f"at Lt={top:g}: {fmt_mean_se(tr)} (reported)"),
        expected="ends ~ Lt (slope 1), middle ~ 1 (slope 0)",
        tolerance=f"slopes with 2 standard errors against {END_SLOPE_MIN:g} and "
                  f"{MID_SLOPE_MAX:g}",
        passed=ok, kind=KIND,
        values={"end_slope": [es, ese], "middle_slope": [ms, mse],
                "tracking_at_top": tr.tolist(),
                "nets": eq[["leak", "seed", "speed_ends", "speed_middle",
                            "speed_tracking"]].to_dict("list")},
        note="speed in the K-norm ||M||_K^2 = Tr[M^T (K + gamma I)^-1 M] of the step's input; "
             "ends: the mean of the first and last layer, middle: the median over "
             "conventions.middle_layers")


CAPTIONS = {"leaky_timescales": (
    "Left: the speed ||dA/dp||_K along depth (one seed per leak, log scale) and, dotted, "
    "Lt sqrt(COI - min COI), the speed a constant Hamiltonian implies. Right: the speed of "
    "the end layers and of the middle layers against Lt (mean and standard error over the "
    "seeds, log-log), with a line proportional to Lt: the ends should follow it, the middle "
    "should stay flat.")}


def figures(res: LeakyResult, figdir: Path) -> list[Path]:
    from ._leaky_figures import timescales_figure

    eq = res.nets[~res.nets["adaptive"].astype(bool)]
    return [timescales_figure(res.layers, eq, figdir / "leaky_timescales.png")]
