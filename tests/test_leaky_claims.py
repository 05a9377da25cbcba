"""The leaky-ResNet verdicts on synthetic measurements: each claim passes on data that
satisfies it and fails, with its reason, on data that violates it; the figures draw from the
same tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bnstruct.experiments import EXPERIMENTS, get_config
from bnstruct.experiments._leaky import LeakyResult

CFG = get_config("leaky-hamiltonian", "smoke")  # leaks (2, 4), seeds (0, 1); k* = 3
K = 3


def _good(leak: float, seed: int, adaptive: bool = False) -> dict:
    return {"run": f"r{leak:g}-{seed}-{int(adaptive)}", "leak": leak, "seed": seed,
            "adaptive": adaptive, "hamiltonian_spread": 0.02, "potential_variation": 20.0,
            "hamiltonian_mean": -leak * (K - 2 / leak) / 2, "coi_min": K + 4 / leak,
            "minus_2H_over_leak": K - 2 / leak + 0.01 * seed, "coi_min_p": 0.5,
            "coi_input": 30.0, "speed_ends": 10 * leak * (1 + 0.01 * seed),
            "speed_middle": 2.0 + 0.01 * seed, "speed_tracking": 0.1,
            "mid_rank_fraction": 1.0, "mid_wgap_fraction": 0.8, "nonneg_gap_middle": 0.02,
            "bottleneck_rank": K, "balance_spread": 0.05,
            "rel_test_error": 0.3 - 0.05 * adaptive, "rho_outer": 0.4 if adaptive else 0.5}


def _result(change=None, depth: int = 8) -> LeakyResult:
    rows = [_good(Lt, s) for Lt in CFG.leaks for s in CFG.seeds]
    rows += [_good(CFG.adaptive_leak, s, True) for s in CFG.seeds]
    nets = pd.DataFrame(rows)
    if change is not None:
        change(nets)
    layers = []
    for r in nets.itertuples():
        for l in range(1, depth + 1):
            p = l / depth
            layers.append({"run": r.run, "leak": r.leak, "seed": r.seed, "adaptive": r.adaptive,
                           "layer": l, "p_in": p - 1 / depth, "p": p, "rho": 1 / depth,
                           "coi": K + (2 * p - 1) ** 2 * 10, "coi_in": K + 10, "kinetic":
                               50 * (2 * p - 1) ** 2 + 1, "potential": 50 * (2 * p - 1) ** 2 + 3,
                           "hamiltonian": -2.0, "speed_K": 5.0, "w_norm2": 10 + p,
                           "balance": 10.0, "nonneg_gap": 0.02, "w_s3": 1.0, "w_s4": 0.1})
    spectra = {r: ([np.array([3, 2, 1, .1, .05])] * depth, [np.array([2, 1, .5, .01])] * depth)
               for r in nets["run"]}
    return LeakyResult(K, pd.DataFrame(layers), nets, spectra)


def _top(nets: pd.DataFrame, col: str, value) -> None:
    sel = (nets["leak"] == max(CFG.leaks)) & ~nets["adaptive"]
    nets.loc[sel & (nets["seed"] == 0), col] = value


VIOLATIONS = {
    "leaky-hamiltonian": [
        (lambda n: _top(n, "hamiltonian_spread", 0.3), "not conserved"),
        (lambda n: _top(n, "potential_variation", 0.2), "says little"),
        (lambda n: _top(n, "hamiltonian_spread", float("nan")), "not conserved")],
    "leaky-cost-of-identity": [
        (lambda n: _top(n, "coi_min", K - 1.0), "min COI in"),
        (lambda n: n.__setitem__("minus_2H_over_leak", -n["leak"]), "rises with Lt"),
        (lambda n: n.__setitem__("coi_min", K + n["leak"]), "falls with Lt")],
    "leaky-timescales": [
        (lambda n: n.__setitem__("speed_ends", 5.0 + 0.01 * n["seed"]), "ends' speed"),
        (lambda n: n.__setitem__("speed_middle", n["leak"] * (1 + 0.01 * n["seed"])),
         "middle's speed")],
    "leaky-structure": [
        (lambda n: _top(n, "mid_rank_fraction", 0.5), "A_p: energy rank"),
        (lambda n: _top(n, "mid_wgap_fraction", 0.25), "W_p: largest gap"),
        (lambda n: _top(n, "nonneg_gap_middle", 0.3), "relu A")],
    "leaky-balance": [(lambda n: _top(n, "balance_spread", 0.9), "not at a balanced")],
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_leaky_claim_passes_on_good_data(name, tmp_path):
    mod = EXPERIMENTS[name]
    c = mod.verdict(_result(), CFG)
    assert c.passed and c.outcome == "pass" and c.key and c.bound and not c.why, c
    figs = mod.figures(_result(), tmp_path)
    assert all(f.exists() for f in figs)


@pytest.mark.parametrize("name, change, why", [(n, c, w) for n, v in VIOLATIONS.items()
                                                for c, w in v])
def test_leaky_claim_fails_on_violating_data(name, change, why):
    c = EXPERIMENTS[name].verdict(_result(change), CFG)
    assert not c.passed and c.outcome == "FAIL"
    assert why in c.why, c.why


def test_leaky_claim_fails_when_a_seed_is_missing():
    res = _result()
    res.nets = res.nets[~((res.nets["seed"] == 1) & (res.nets["leak"] == max(CFG.leaks)))]
    for name in VIOLATIONS:
        if name not in ("leaky-timescales", "leaky-cost-of-identity"):
            assert not EXPERIMENTS[name].verdict(res, CFG).passed, name


def test_adaptive_finding_reports_and_fails_only_without_runs(tmp_path):
    mod = EXPERIMENTS["leaky-adaptive-steps"]
    c = mod.verdict(_result(), CFG)
    assert c.passed and c.outcome == "reported" and "0.40" in c.key
    assert mod.figures(_result(), tmp_path)[0].exists()
    res = _result()
    res.nets = res.nets[~(res.nets["adaptive"] & (res.nets["seed"] == 1))]
    assert not mod.verdict(res, CFG).passed
    bad = _result(lambda n: n.__setitem__("rel_test_error", float("nan")))
    assert not mod.verdict(bad, CFG).passed


def test_leaky_plans_share_their_runs():
    names = ["leaky-hamiltonian", "leaky-cost-of-identity", "leaky-timescales",
             "leaky-structure", "leaky-balance"]
    for mode in ("smoke", "quick", "full"):
        plans = [[c.default_name() for c in EXPERIMENTS[n].plan(get_config(n, mode))]
                 for n in names]
        assert all(p == plans[0] for p in plans)
        ad = EXPERIMENTS["leaky-adaptive-steps"].plan(get_config("leaky-adaptive-steps", mode))
        cfg = get_config("leaky-adaptive-steps", mode)
        if cfg.adaptive_leak in cfg.leaks:  # its equal-steps nets are the sweep's
            assert set(c.default_name() for c in ad[:len(cfg.seeds)]) <= set(plans[0])
        assert all(c.model.adapt_every for c in ad[len(cfg.seeds):])
