r"""Leaky claim 2 (`leaky-cost-of-identity`, THEORY 7 prediction 2): as the leak ``Lt``
grows, the smallest Cost of Identity along depth falls toward the bottleneck rank ``k*`` from
above and :math:`-2H/\tilde L` rises toward it from below (the paper reports a spread of
1-2 across runs). Judged as limits: the trends over the leaks with their error bars, and both
within :data:`BAND` of ``k*`` at the largest leak for every seed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..store import Run
from ._leaky import LEAKY, LeakyConfig, LeakyResult, at_leak, leaky_measure, leaky_plan
from ._records import Claim, Kind, Memo
from ._statistics import fmt_mean_se, slope_fit

NAME = "leaky-cost-of-identity"
KIND: Kind = "claim"
#: at the largest leak both numbers within this distance of k* (the paper's spread: 1-2)
BAND = 2.0
#: "from above" / "from below": at most this far on the wrong side of k*
WRONG_SIDE = 0.5

CONFIGS = LEAKY


def statement(cfg: LeakyConfig) -> str:
    return (f"on {cfg.describe()}: as Lt grows, min_p COI(A_p) falls toward k* = {cfg.k} "
            "from above and -2H/Lt rises toward it from below")


def plan(cfg: LeakyConfig) -> list[RunConfig]:
    return leaky_plan(cfg)


def measure(cfg: LeakyConfig, runs: Sequence[Run], *, memo: Memo | None = None
            ) -> LeakyResult:
    return leaky_measure(cfg, runs, memo=memo)


def verdict(res: LeakyResult, cfg: LeakyConfig) -> Claim:
    k, top = res.k, max(cfg.leaks)
    eq = res.nets[~res.nets["adaptive"].astype(bool)]
    x = np.log(eq["leak"].to_numpy(float))
    cs, cse = slope_fit(x, eq["coi_min"].to_numpy(float))
    hs, hse = slope_fit(x, eq["minus_2H_over_leak"].to_numpy(float))
    t = at_leak(res.nets, top)
    c, h = t["coi_min"].to_numpy(float), t["minus_2H_over_leak"].to_numpy(float)
    checks = {
        "min COI falls with Lt (slope + 2 SE < 0)": bool(np.isfinite(cs + cse)
                                                        and cs + 2 * cse < 0),
        "-2H/Lt rises with Lt (slope - 2 SE > 0)": bool(np.isfinite(hs + hse)
                                                       and hs - 2 * hse > 0),
        f"min COI in [k* - {WRONG_SIDE:g}, k* + {BAND:g}] at Lt = {top:g}": bool(
            c.size and ((c >= k - WRONG_SIDE) & (c <= k + BAND)).all()),
        f"-2H/Lt in [k* - {BAND:g}, k* + {WRONG_SIDE:g}] at Lt = {top:g}": bool(
            h.size and ((h >= k - BAND) & (h <= k + WRONG_SIDE)).all()),
    }
    ok = all(checks.values()) and len(t) == len(cfg.seeds)
    why = "; ".join(f"not met: {n}" for n, v in checks.items() if not v)
    if not all(list(checks.values())[1::2]) and "speed_middle" in t:
        why += (f" (at Lt = {top:g} the mean H over the interior is "
                f"{fmt_mean_se(t['hamiltonian_mean'])}, not near -Lt k*/2 = {-top * k / 2:g}: "
                f"the middle layers still move, speed ||dA/dp||_K "
                f"{fmt_mean_se(t['speed_middle'])}, so their kinetic energy does not vanish)")
    per = "; ".join(f"Lt={Lt:g}: min COI {fmt_mean_se(at_leak(eq, Lt)['coi_min'])}, -2H/Lt "
                    f"{fmt_mean_se(at_leak(eq, Lt)['minus_2H_over_leak'])}" for Lt in cfg.leaks)
    return Claim(
        NAME, statement(cfg),
        key=(f"at Lt={top:g}: min COI {fmt_mean_se(c)}, -2H/Lt {fmt_mean_se(h)} (k* = {k}); "
             f"slopes vs log Lt {cs:+.2f} ± {cse:.2f}, {hs:+.2f} ± {hse:.2f}"),
        bound=(f"min COI falls to [k*-{WRONG_SIDE:g}, k*+{BAND:g}], -2H/Lt rises to "
               f"[k*-{BAND:g}, k*+{WRONG_SIDE:g}]"),
        checked=("Over the leaks, the smallest Cost of Identity along depth decreases and "
                 "-2H/Lt increases (slopes against log Lt with 2 standard errors), and at the "
                 "largest leak every seed has both close to the bottleneck rank k*."),
        why=why if not ok else "",
        measured=per, expected=f"min COI -> k* = {k} from above, -2H/Lt -> k* from below",
        tolerance=f"within {BAND:g} of k* (the paper's spread: 1-2), at most {WRONG_SIDE:g} on "
                  "the wrong side; trends beyond 2 standard errors",
        passed=ok, kind=KIND,
        values={"k": k, "leak": top, "checks": checks, "coi_min_slope": [cs, cse],
                "minus_2H_over_leak_slope": [hs, hse],
                "nets": eq[["leak", "seed", "coi_min", "coi_min_p", "minus_2H_over_leak",
                            "coi_input"]].to_dict("list")},
        note="-2H/Lt uses the mean of H over the interior layers; COI is the stable version "
             "(gamma0 = conventions.COI_GAMMA0)")


CAPTIONS = {"leaky_cost_of_identity": (
    "Left: the Cost of Identity COI(A_p) along depth for every leak and seed (log scale), "
    "with the task's bottleneck rank k* dotted; its minimum sits in the middle of the net. "
    "Right: min_p COI and -2H/Lt against Lt (mean and standard error over the seeds, every "
    "net grey); the theory has the first fall toward k* from above and the second rise "
    "toward it from below.")}


def figures(res: LeakyResult, figdir: Path) -> list[Path]:
    from ._leaky_figures import coi_figure

    return [coi_figure(res.layers, res.nets, res.k, figdir / "leaky_cost_of_identity.png")]
