r"""Claim 5 (`bound`): the bottleneck inequality of THEORY 3 holds with non-negative slack for
every trained net and every training point; ``c1 = param_norm2 - kL`` is reported per depth
(the theory's regime is ``c1 = O(1)``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import SWEEPS, Claim, SweepConfig, SweepResult, sweep_measure

NAME = "bound"
STATEMENT = ("the inequality of THEORY 3 holds with non-negative slack for every trained net "
             "and data point; its slack and c1 = param_norm2 - kL are reported per depth")
#: float64 round-off allowed on the slack, relative to param_norm2
ROUNDOFF = 1e-9


#: the shared composite depth sweep (claims 2-5 read the same runs and measurements)
CONFIGS = SWEEPS
measure = sweep_measure


def verdict(res: SweepResult, cfg: SweepConfig | None = None) -> Claim:
    b = res.bound
    sl = b["slack"].to_numpy(dtype=float)
    scale = b["param_norm2"].to_numpy(dtype=float)
    finite = np.isfinite(sl)
    worst = float(np.nanmin(sl)) if finite.any() else float("nan")
    ok = bool(finite.any() and np.all(sl[finite] >= -ROUNDOFF * scale[finite]))
    nets = res.nets.sort_values("depth")
    per = ", ".join(f"L={int(r.depth)}: c1={r.c1:.1f}, min slack {r.min_slack:.2f}"
                    for r in nets.itertuples())
    return Claim(
        NAME, STATEMENT,
        measured=f"min slack {worst:.3g} over {int(finite.sum())} (net, point) pairs; {per}",
        expected="slack >= 0 everywhere; c1 = O(1)",
        tolerance=f"slack >= -{ROUNDOFF:g} * param_norm2 (float64 round-off)",
        passed=ok,
        values={"k": res.k, "min_slack": worst, "n_points": int(finite.sum()),
                "n_infinite": int((~finite).sum()), "nets": nets.to_dict("list")},
        note="points where rank Jf(x) < k have an infinite right side and are not counted")


def figure(res: SweepResult, figdir: Path) -> list[Path]:
    from .. import plots

    return [plots.bound_figure(res.bound, res.nets, res.k, figdir / "bound.png")]

