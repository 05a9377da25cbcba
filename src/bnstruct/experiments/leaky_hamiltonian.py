r"""Leaky claim 1 (`leaky-hamiltonian`, THEORY 7 prediction 1): along the depth of a trained
leaky ResNet the Hamiltonian :math:`H_p = \text{kinetic} - \text{potential}` is nearly constant
while its two parts vary a lot. Judged at the largest leak (a large-``Lt`` statement), for
every seed, over the interior layers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config import RunConfig
from ..store import Run
from ._leaky import LEAKY, LeakyConfig, LeakyResult, at_leak, leaky_measure, leaky_plan
from ._records import Claim, Kind, Memo
from ._statistics import fmt_mean_se

NAME = "leaky-hamiltonian"
KIND: Kind = "claim"
#: the spread of H over the interior layers, as a share of the larger spread of its parts
H_SPREAD_MAX = 0.1
#: "the parts vary a lot": the potential's spread over the interior at least its median
PARTS_MIN = 1.0

CONFIGS = LEAKY


def statement(cfg: LeakyConfig) -> str:
    return (f"on {cfg.describe()}: at the largest Lt the Hamiltonian (kinetic - potential "
            "energy) is nearly constant along depth while its parts vary a lot")


def plan(cfg: LeakyConfig) -> list[RunConfig]:
    return leaky_plan(cfg)


def measure(cfg: LeakyConfig, runs: Sequence[Run], *, memo: Memo | None = None
            ) -> LeakyResult:
    return leaky_measure(cfg, runs, memo=memo)


def verdict(res: LeakyResult, cfg: LeakyConfig) -> Claim:
    top = max(cfg.leaks)
    t = at_leak(res.nets, top)
    hs = t["hamiltonian_spread"].to_numpy(float)
    pv = t["potential_variation"].to_numpy(float)
    n_ok = len(t) == len(cfg.seeds)
    ok = bool(n_ok and (hs <= H_SPREAD_MAX).all() and (pv >= PARTS_MIN).all())
    per = "; ".join(f"Lt={Lt:g}: {fmt_mean_se(at_leak(res.nets, Lt)['hamiltonian_spread'])}"
                    for Lt in cfg.leaks)
    why = []
    if not n_ok:
        why.append(f"{len(t)} nets at Lt = {top:g}, {len(cfg.seeds)} planned")
    if (hs > H_SPREAD_MAX).any() or not hs.size or (hs != hs).any():
        why.append(f"H varies along depth by up to {hs.max():.3g} of its parts' spread "
                   f"(bound {H_SPREAD_MAX:g}): not conserved")
    if (pv < PARTS_MIN).any() or (pv != pv).any():
        why.append(f"the potential varies by only {pv.min():.3g} of its median along depth, "
                   "so a constant H says little")
    return Claim(
        NAME, statement(cfg),
        key=f"H spread / parts' spread at Lt={top:g}: {fmt_mean_se(hs)} (max {hs.max():.3g})",
        bound=f"<= {H_SPREAD_MAX:g} for every seed; parts vary >= {PARTS_MIN:g}x their median",
        checked=("Along the interior layers of every net at the largest leak, the kinetic "
                 "energy (1/2Lt)||dA/dp||_K^2 minus the potential (Lt/2) COI(A_p) stays within "
                 f"{H_SPREAD_MAX:g} of the spread of its parts, which vary a lot."),
        why="; ".join(why) if not ok else "",
        measured=(f"H spread / parts' spread per Lt (mean ± SE over seeds): {per}; potential "
                  f"spread / median at Lt={top:g}: {fmt_mean_se(pv)}"),
        expected="H constant in p (a conservation law at critical points, large Lt)",
        tolerance=f"spread(H) <= {H_SPREAD_MAX:g} spread(parts) over the interior layers",
        passed=ok, kind=KIND,
        values={"k": res.k, "leak": top, "hamiltonian_spread": hs.tolist(),
                "potential_variation": pv.tolist(),
                "nets": res.nets[["leak", "seed", "adaptive", "hamiltonian_spread",
                                  "hamiltonian_mean", "potential_variation"]].to_dict("list")},
        note=("energies of layer l are taken at its input A_{l-1}, where (A_l - A_{l-1})/rho_l "
              "is exactly the flow's right side; stable COI with gamma0 = conventions."
              "COI_GAMMA0"))


CAPTIONS = {"leaky_hamiltonian": (
    "Left: kinetic (solid) and potential (dashed) energy along depth p for every leak Lt "
    "and seed (log scale): both vary by orders of magnitude, large near the ends. Right: "
    "their difference, the Hamiltonian H, along p; the claim is that it stays nearly flat "
    "over the interior layers at the largest Lt.")}


def figures(res: LeakyResult, figdir: Path) -> list[Path]:
    from ._leaky_figures import hamiltonian_figure

    return [hamiltonian_figure(res.layers, figdir / "leaky_hamiltonian.png")]
