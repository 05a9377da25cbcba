r"""Leaky claim 5 (`leaky-balance`, THEORY 7 prediction 5): balancedness,
:math:`\|W_p\|^2 - \tilde L\int_0^p\|b_q\|^2 dq` (``b``: the bias column of ``W_q``) is
constant in ``p`` at critical points. Judged at the largest leak for every seed: its spread
over the interior layers at most :data:`BAL_MAX` of the larger spread of its two terms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config import RunConfig
from ..store import Run
from ._leaky import LEAKY, LeakyConfig, LeakyResult, at_leak, leaky_measure, leaky_plan
from ._records import Claim, Kind, Memo
from ._statistics import fmt_mean_se

NAME = "leaky-balance"
KIND: Kind = "claim"
#: the spread of the conserved quantity, as a share of its terms' larger spread
BAL_MAX = 0.25

CONFIGS = LEAKY


def statement(cfg: LeakyConfig) -> str:
    return (f"on {cfg.describe()}: at the largest Lt, ||W_p||^2 - Lt int_0^p ||b||^2 is "
            "constant along depth")


def plan(cfg: LeakyConfig) -> list[RunConfig]:
    return leaky_plan(cfg)


def measure(cfg: LeakyConfig, runs: Sequence[Run], *, memo: Memo | None = None
            ) -> LeakyResult:
    return leaky_measure(cfg, runs, memo=memo)


def verdict(res: LeakyResult, cfg: LeakyConfig) -> Claim:
    top = max(cfg.leaks)
    t = at_leak(res.nets, top)
    b = t["balance_spread"].to_numpy(float)
    ok = bool(len(t) == len(cfg.seeds) and b.size and (b <= BAL_MAX).all())
    per = "; ".join(f"Lt={Lt:g}: {fmt_mean_se(at_leak(res.nets, Lt)['balance_spread'])}"
                    for Lt in cfg.leaks)
    return Claim(
        NAME, statement(cfg),
        key=f"spread / its terms' spread at Lt={top:g}: {fmt_mean_se(b)} (max {b.max():.3g})",
        bound=f"<= {BAL_MAX:g} for every seed",
        checked=("Over the interior layers of every net at the largest leak, ||W_p||^2 minus "
                 "Lt times the running integral of the bias norms changes by at most "
                 f"{BAL_MAX:g} of the change of either term."),
        why=(f"the quantity moves by up to {b.max():.3g} of its terms' spread (bound "
             f"{BAL_MAX:g}): the nets are not at a balanced critical point") if not ok else "",
        measured=f"spread ratio per Lt (mean ± SE over seeds): {per}",
        expected="constant in p at critical points", tolerance=f"spread ratio <= {BAL_MAX:g}",
        passed=ok, kind=KIND,
        values={"leak": top, "balance_spread": b.tolist(),
                "nets": res.nets[["leak", "seed", "adaptive", "balance_spread"]]
                .to_dict("list")},
        note="the integral is the left Riemann sum over the layer steps rho_l")


CAPTIONS = {"leaky_balance": (
    "At the largest leak, every seed: ||W_p||^2 (blue), Lt times the running integral of "
    "the bias norms (orange) and their difference (green) along depth; the theory has the "
    "difference constant at a critical point.")}


def figures(res: LeakyResult, figdir: Path) -> list[Path]:
    from ._leaky_figures import balance_figure

    top = float(res.nets.loc[~res.nets["adaptive"].astype(bool), "leak"].max())
    return [balance_figure(res.layers, top, figdir / "leaky_balance.png")]
