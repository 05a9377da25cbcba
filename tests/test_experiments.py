"""Verdict logic of every reproduction claim on synthetic inputs: data that satisfies the
claim passes, data that violates it fails. Plus the report writer and one smoke pipeline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bnstruct.conventions import middle_layers
from bnstruct.experiments import (
    EXPERIMENTS,
    bound,
    digits,
    learning_rate,
    linear,
    narrow_minima,
    norm_vs_depth,
    representation_rank,
    symmetry,
    weight_spectra,
)
from bnstruct.experiments._records import Claim
from bnstruct.experiments._sweep import SWEEPS, SweepResult

SW = SWEEPS["quick"]


def _layers(depths, *, seeds=(0,), k=2, n_near=2, sk1=lambda L: 0.2 * (L / 8) ** -0.5,
            mid_rank=2.1, end_rank=5.0, n_ends=1):
    """A synthetic sweep table that satisfies every claim: the first and last ``n_ends``
    layers are off the structure (5 values near 1, s_k1 = 0.8, energy rank 5); the others
    have ``n_near`` values near 1, s_k1 = ``sk1(L)`` and energy rank k."""
    rows = []
    for L in depths:
        mids = set(middle_layers(L))
        for seed in seeds:
            for l in range(1, L + 1):
                mid = l in mids
                end = l <= n_ends or l >= L - n_ends  # the output and the hidden layer before it
                rows.append({"run": f"L{L}-s{seed}", "depth": L, "seed": seed, "k": k,
                             "layer": l, "middle": mid, "near_one": 5 if end else n_near,
                             "s_k1": 0.8 if end else sk1(L), "mean_align": 0.1,
                             "rep_erank_participation": mid_rank if mid else end_rank,
                             "rep_erank_participation_uncentered": 1.5,
                             "rep_erank_threshold": 3.0 if mid else 6.0,
                             "rep_energy_rank": 5 if end else k,
                             "rep_energy_outside_k": 0.2 if end else 1e-4,
                             "rep_energy_kth": 0.3,
                             "s1": 1.0, "s2": 1.0, "s3": sk1(L)})
    return pd.DataFrame(rows)


def _sweep(norms=lambda L: 2 * L + 5.0, depths=(6, 9, 12, 16), slack=1.0, seeds=(0,), **kw):
    grid = [(L, s) for L in depths for s in seeds]
    nets = pd.DataFrame({"run": [f"L{L}-s{s}" for L, s in grid], "depth": [L for L, _ in grid],
                         "seed": [s for _, s in grid],
                         "param_norm2": [norms(L) + 0.1 * s for L, s in grid],
                         "c1": [norms(L) - 2 * L for L, _ in grid],
                         "log_pdet2_max": 1.0, "min_slack": slack})
    b = pd.DataFrame({"depth": np.repeat([L for L, _ in grid], 3),
                      "seed": np.repeat([s for _, s in grid], 3), "slack": slack, "lhs": 1.0,
                      "rhs": 1.0 + slack, "param_norm2": 50.0, "log_pdet2": 1.0})
    return SweepResult(2, nets, _layers(depths, seeds=seeds, **kw), b)


def test_registry_has_every_claim_with_all_modes():
    assert list(EXPERIMENTS) == ["linear", "norm-vs-depth", "weight-spectra",
                                 "representation-rank", "bound", "learning-rate",
                                 "narrow-minima", "symmetry", "digits",
                                 "representation-convergence", "regime-map",
                                 # the follow-up paper's (leaky ResNets)
                                 "leaky-hamiltonian", "leaky-cost-of-identity",
                                 "leaky-timescales", "leaky-structure", "leaky-balance",
                                 "leaky-adaptive-steps"]
    for mod in EXPERIMENTS.values():
        assert set(mod.CONFIGS) == {"smoke", "quick", "full"}
    assert len(SWEEPS["quick"].seeds) >= 3 and len(SWEEPS["full"].seeds) >= 3


LIN = linear.CONFIGS["quick"]
LR = learning_rate.CONFIGS["quick"]


def test_linear_verdict():
    d = pd.DataFrame({"depth": [2, 4, 8], "param_norm2": 1.0, "linear_cost": 1.0,
                      "cost_rel_err": [1e-4, 5e-3, 9e-3], "rank": 3})
    lay = pd.DataFrame({"depth": [2, 4, 8], "layer": 1, "i": 1, "s": 1.0, "predicted": 1.0,
                        "rel_err": [1e-3, 0.015, 0.0]})
    assert linear.verdict(linear.Result(d, lay), LIN).passed
    assert not linear.verdict(linear.Result(d.assign(cost_rel_err=[0, 0.02, 0]), lay), LIN).passed
    assert not linear.verdict(linear.Result(d, lay.assign(rel_err=[0, 0.03, 0])), LIN).passed
    assert not linear.verdict(linear.Result(d.iloc[:2], lay.iloc[:2]), LIN).passed  # 2 depths


def test_norm_vs_depth_verdict():
    c = norm_vs_depth.verdict(_sweep(), SW)
    assert c.passed and abs(c.values["R0"] - 2) < 1e-9
    assert not norm_vs_depth.verdict(_sweep(norms=lambda L: 3.5 * L + 5), SW).passed
    assert not norm_vs_depth.verdict(_sweep(depths=(6, 9, 12)), SW).passed  # < 4 depths
    # slope 2 but a noisy fit: R0_hat within 0.5 of k, its 2-SE interval is not
    noisy = _sweep(seeds=(0, 1, 2))
    noisy.nets["param_norm2"] += np.where(noisy.nets["seed"] == 1, 6.0, -3.0)
    c = norm_vs_depth.verdict(noisy, SW)
    assert abs(c.values["R0"] - 2) < 0.5 and c.values["R0_err"] > 0.15 and not c.passed


def test_weight_spectra_verdict():
    res = _sweep(seeds=(0, 1, 2))
    c = weight_spectra.verdict(res, SW)
    assert c.passed, c.measured
    assert c.values["exponent"] == pytest.approx(-0.5)  # a finding, reported
    assert c.values["off_slope"] == pytest.approx(0.0, abs=1e-12)
    assert "±" in c.measured
    # a constant fraction of the layers off the structure (every third layer with k+1 near 1)
    grow = _sweep(seeds=(0, 1, 2))
    grow.layers.loc[grow.layers["layer"] % 3 == 0, "near_one"] = 3
    c = weight_spectra.verdict(grow, SW)
    assert not c.passed and not c.values["growth_ok"] and c.values["off_slope"] > 0.25
    # (k+1)-th value above EPS in those layers: off as well
    grow = _sweep(seeds=(0, 1, 2))
    grow.layers.loc[grow.layers["layer"] % 3 == 0, "s_k1"] = 1.1 * weight_spectra.EPS
    assert not weight_spectra.verdict(grow, SW).values["growth_ok"]
    # a bounded count (3 layers at each end) but too many of them at the deepest depth
    c = weight_spectra.verdict(_sweep(seeds=(0, 1, 2), n_ends=3), SW)
    assert c.values["growth_ok"] and not c.values["deepest_ok"] and not c.passed
    # s_{k+1} sqrt(L) above the theorem's sqrt(C_min): C = c1 - log_pdet2_max = 0.05
    low_c = _sweep(seeds=(0, 1, 2), norms=lambda L: 2 * L + 1.05, sk1=lambda L: 0.2)
    c = weight_spectra.verdict(low_c, SW)
    assert c.values["growth_ok"] and not c.values["bounded_ok"] and not c.passed
    # an exponent far from -1/2 is no longer a failure (O(L^-1/2) is an upper bound)
    flat = weight_spectra.verdict(_sweep(seeds=(0, 1, 2), sk1=lambda L: 0.01), SW)
    assert flat.passed and flat.values["exponent"] == pytest.approx(0.0, abs=1e-9)


def test_almost_all_needs_an_error_bar():
    from bnstruct.experiments._statistics import almost_all

    nets = pd.DataFrame({"depth": [8, 16], "off": [2, 2], "on_fraction": [0.75, 0.875]})
    assert not almost_all(nets).passed  # two nets: no standard error, no verdict
    nets = pd.DataFrame({"depth": [8, 12, 16], "off": [2, 2, 2],
                         "on_fraction": [0.75, 0.83, 0.875]})
    aa = almost_all(nets)
    assert aa.passed and aa.deepest == 16 and aa.deepest_min_fraction == 0.875
    nets.loc[2, "on_fraction"] = np.nan  # a NaN at the deepest depth fails, never skipped
    assert not almost_all(nets).deepest_ok


def test_loglog_fit_standard_error():
    rng = np.random.default_rng(0)
    x = np.array([8, 10, 12, 14, 16, 20.0])
    y = x ** -0.5 * np.exp(0.1 * rng.standard_normal(x.size))
    b, se = weight_spectra.loglog_fit(x, y)
    ref = np.polyfit(np.log(x), np.log(y), 1, cov=True)
    assert b == pytest.approx(ref[0][0]) and se == pytest.approx(np.sqrt(ref[1][0, 0]))
    assert np.isnan(weight_spectra.loglog_fit(x[:2], y[:2])[1])


def test_representation_rank_verdict():
    res = _sweep(seeds=(0, 1, 2))
    c = representation_rank.verdict(res, SW)
    assert c.passed, c.measured
    assert "PR 2.10" in c.measured  # the participation ratio is reported, not judged
    # the participation ratio of an anisotropic 2-d cloud (< 2) is no longer a failure
    assert representation_rank.verdict(_sweep(seeds=(0, 1, 2), mid_rank=1.4), SW).passed
    # a constant fraction of the hidden layers 3-dimensional: the count grows with L
    grow = _sweep(seeds=(0, 1, 2))
    grow.layers.loc[grow.layers["layer"] % 3 == 0, "rep_energy_rank"] = 3
    c = representation_rank.verdict(grow, SW)
    assert not c.passed and not c.values["growth_ok"]
    # rank below k (a negligible k-th direction) counts as off too
    low = _sweep(seeds=(0, 1, 2))
    low.layers.loc[low.layers["layer"] % 3 == 0, "rep_energy_rank"] = 1
    assert not representation_rank.verdict(low, SW).passed
    # ends not higher than k
    flat = _sweep(seeds=(0, 1, 2))
    flat.layers.loc[flat.layers["layer"] == 1, "rep_energy_rank"] = 2
    c = representation_rank.verdict(flat, SW)
    assert not c.passed and not c.values["ends_ok"]
    # one seed at the deepest depth with most hidden layers 3-dimensional
    bad = _sweep(seeds=(0, 1, 2))
    sel = (bad.layers["depth"] == 16) & (bad.layers["seed"] == 1) & bad.layers["middle"]
    bad.layers.loc[sel, "rep_energy_rank"] = 3
    c = representation_rank.verdict(bad, SW)
    assert not c.values["deepest_ok"] and not c.passed


def test_bound_verdict():
    assert bound.verdict(_sweep(slack=0.0), SW).passed
    # +inf (rank Jf(x) < k) is skipped and reported; NaN or -inf is never skipped
    res = _sweep()
    res.bound.loc[res.bound["depth"] == 16, "slack"] = np.inf
    c = bound.verdict(res, SW)
    assert c.passed and "L=16 seed 0: 3" in c.measured
    for bad in (np.nan, -np.inf):
        res = _sweep()
        res.bound.loc[res.bound.index[0], "slack"] = bad
        c = bound.verdict(res, SW)
        assert not c.passed and "NaN/-inf" in c.measured
    assert not bound.verdict(_sweep(slack=-1e-3), SW).passed


# learning-rate's verdict (v2) is tested in test_claims_v2.py


def test_learning_rate_probe_detects_edge_of_stability():
    import torch

    from bnstruct.experiments._records import float64_copy

    torch.manual_seed(0)
    X = torch.randn(32, 3, dtype=torch.float64)
    Y = X @ torch.randn(3, 2, dtype=torch.float64) + torch.randn(32, 2, dtype=torch.float64)
    model = float64_copy(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    Xb = torch.cat([X, torch.ones(32, 1, dtype=torch.float64)], 1)  # the bias is a parameter
    eig = torch.linalg.eigvalsh(2 * (Xb.T @ Xb) / 32).max().item()  # sharpness (lam = 0)
    assert learning_rate.probe(model, X, Y, 0.0, 0.5 / eig, steps=50) == 0  # lr < 2/sharpness
    assert learning_rate.probe(model, X, Y, 0.0, 2.2 / eig, steps=50) > 20  # oscillates


def test_narrow_minima_verdict():
    cfg = narrow_minima.CONFIGS["quick"]

    def frame(*r1):
        rows = []
        for seed, r in enumerate(r1):
            rows += [{"solution": "rank 2", "seed": seed, "depth": 12, "param_norm2": 50.0,
                      "rel_fit": 0.01, "ntk_per_NL": 1.0},
                     {"solution": "rank 1", "seed": seed, "depth": 12, "param_norm2": 50.0,
                      "rel_fit": 0.3, "ntk_per_NL": r}]
        return pd.DataFrame(rows)
    c = narrow_minima.verdict(frame(5.0, 4.0, 6.0), cfg)
    assert c.passed and c.values["ratio"] == pytest.approx(5.0) and "5 ± 0.577" in c.measured
    assert not narrow_minima.verdict(frame(1.3), cfg).passed
    assert not narrow_minima.verdict(frame(5.0, 1.3, 6.0), cfg).passed  # every seed counts


def test_symmetry_verdict():
    cfg = symmetry.CONFIGS["quick"]
    base = dict(seed=0, layers=pd.DataFrame({"layer": [1]}), layer=6, rank=2,
                participation=1.7, change_axis=0.02, change_random=0.8, r2=(0.97, 0.95),
                pca=np.zeros((3, 2)), invariants=np.zeros((3, 2)))

    def res(*seeds):
        return symmetry.Result(tuple(symmetry.SeedResult(**{**base, "seed": i, **s})
                                     for i, s in enumerate(seeds)))

    c = symmetry.verdict(res({}, {}, {}), cfg)
    assert c.passed and "1.70 ± 0" in c.measured
    # one seed violating one part fails the claim
    for bad in ({"rank": 3}, {"rank": 1}, {"change_axis": 0.2}, {"r2": (0.97, 0.5)}):
        assert not symmetry.verdict(res({}, bad, {}), cfg).passed
    assert not symmetry.verdict(res(), cfg).passed  # no seed: no verdict


def test_digits_finding():
    cfg = digits.CONFIGS["quick"]
    nets = pd.DataFrame({"depth": [6, 6, 6], "seed": [0, 1, 2],
                         "rep_energy_rank_middle": [3.0, 3.0, 4.0],
                         "rep_erank_participation_middle": [2.2, 2.4, 2.6],
                         "near_one_middle": [4.0, 4.0, 4.0], "bound_k": [3, 3, 4],
                         "test_accuracy": [0.9, 0.92, 0.94], "min_slack": [2.0, 1.0, 3.0],
                         "slack_ok": [True, True, True]})
    c = digits.verdict(digits.Result(nets, pd.DataFrame()), cfg)
    assert c.passed and c.kind == "finding"
    assert "rank 3.3 ± 0.33" in c.measured and "test acc 0.920 ± 0.012" in c.measured
    assert not digits.verdict(digits.Result(nets.assign(slack_ok=False), pd.DataFrame()),
                              cfg).passed


def test_verdicts_use_every_seed():
    """With three seeds per depth: the depth fit runs over all nets, per-depth numbers are
    mean ± standard error, one bad net at the deepest depth fails weight-spectra."""
    res = _sweep(seeds=(0, 1, 2))
    fit = norm_vs_depth.verdict(res, SW)
    assert "(12 nets)" in fit.measured
    from bnstruct.theory import fit_depth

    ref = fit_depth(res.nets["depth"], res.nets["param_norm2"])
    assert fit.values["R0"] == pytest.approx(ref.R0, rel=1e-12)
    bad = _sweep(seeds=(0, 1, 2))
    sel = (bad.layers["depth"] == 16) & (bad.layers["seed"] == 2) & bad.layers["middle"]
    bad.layers.loc[sel, "near_one"] = 3
    c = weight_spectra.verdict(bad, SW)
    assert not c.passed and not c.values["deepest_ok"]


def test_statements_and_notes_follow_the_config():
    import dataclasses

    for mode in ("smoke", "quick", "full"):
        cfg = learning_rate.CONFIGS[mode]
        note = learning_rate.note(cfg)
        assert (f"{cfg.warmup_steps} steps" in note and f"{cfg.steps} at 2c/L" in note
                and f"{cfg.final_steps} steps at lr = c/L" in note)
        sw = SWEEPS[mode]
        assert ", ".join(map(str, sorted(sw.depths))) in weight_spectra.statement(sw)
    other = dataclasses.replace(SW, depths=(5, 7), seeds=(0, 1, 2, 3))
    assert "5, 7" in norm_vs_depth.statement(other) and "4 seed(s)" in bound.statement(other)


def test_net_layers_adds_own_columns_to_analyze():
    """The experiment's own columns against a NumPy forward pass; the shared ones are
    analyze's, unchanged."""
    import torch

    from bnstruct import MLP, analyze
    from bnstruct.diagnostics import Evaluation
    from bnstruct.experiments._sweep import _own_columns

    torch.manual_seed(1)
    model = MLP(3, 6, 4, 2).double()
    X = torch.randn(40, 3, dtype=torch.float64)
    own = _own_columns(Evaluation(model, X), k=2)
    Ws = [m.weight.detach().numpy() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    bs = [m.bias.detach().numpy() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    a = X.numpy()
    for l, (W, b) in enumerate(zip(Ws, bs, strict=True), start=1):
        mu = a.mean(0)
        a = a @ W.T + b
        if l < len(Ws):
            a = np.maximum(a, 0.0)
        row = own.iloc[l - 1]
        r = np.linalg.svd(a, compute_uv=False)  # uncentered
        assert row["rep_erank_participation_uncentered"] == pytest.approx(
            (r ** 2).sum() ** 2 / (r ** 4).sum(), rel=1e-9)
        e = np.linalg.svd(a - a.mean(0), compute_uv=False) ** 2  # centered energies
        assert row["rep_energy_outside_k"] == pytest.approx(e[2:].sum() / e.sum(), rel=1e-9)
        assert row["rep_energy_kth"] == pytest.approx(e[1] / e.sum(), rel=1e-9)
        if min(W.shape) > 2:
            v = np.linalg.svd(W)[2][2]
            assert row["mean_align"] == pytest.approx(abs(v @ mu) / np.linalg.norm(mu), rel=1e-9)
        else:
            assert np.isnan(row["mean_align"])
    lay = analyze(model, X, 2, ntk=False).layers
    assert {"near_one", "rep_erank_participation", "middle"} <= set(lay.columns)
    assert not set(own.columns) & set(lay.columns)  # own columns never shadow shared ones


def test_write_report_is_strict_json_and_reports_errors(tmp_path):
    from bnstruct.plots import new_figure, save_figure
    from bnstruct.report import write_report

    fig_path = save_figure(new_figure((1, 1)), tmp_path / "figures" / "f.png")
    claims = [Claim("a", "stmt a", "1.0", "1", "0.5", True, 1.0, (str(fig_path),),
                    {"x": float("nan"), "arr": np.arange(2), "t": {"c1": [1.0, float("inf")]}}),
              Claim("b", "stmt | b", "3.0", "1", "0.5", False, 2.0),
              Claim.crashed("c", "stmt c", "finding", RuntimeError("boom"))]
    paths = write_report(claims, tmp_path, mode="quick", seconds=3.0)
    text = paths["json"].read_text()

    def reject(name):
        raise ValueError(f"non-strict JSON constant {name}")
    data = json.loads(text, parse_constant=reject)
    assert [c["name"] for c in data["claims"]] == ["a", "b", "c"]
    a = data["claims"][0]
    assert a["figures"] == ["figures/f.png"]
    assert a["values"] == {"x": None, "arr": [0, 1], "t": {"c1": [1.0, None]}}
    assert a["nonfinite"] == {"values.x": "1 NaN", "values.t.c1": "1 inf"}
    assert data["meta"]["passed"] is False and data["meta"]["errors"] == ["c"]
    assert data["claims"][2]["error"] == "RuntimeError: boom"
    assert data["claims"][2]["kind"] == "finding"  # an error, not a failed finding
    md = paths["md"].read_text()
    assert "| [a](#claim-a) | PASS |" in md and "| [b](#claim-b) | FAIL |" in md
    assert "| [c](#claim-c) | ERROR | error: RuntimeError: boom |" in md
    assert "**1 of 2 claims pass, 1 finding (1 error)**" in md
    html = paths["html"].read_text()
    assert "data:image/png;base64," in html and "FAIL" in html and "ERROR" in html


def test_reproduce_rejects_unknown(tmp_path):
    from bnstruct.errors import ConfigError
    from bnstruct.report import reproduce

    with pytest.raises(ConfigError, match="unknown experiment"):
        reproduce("smoke", tmp_path, only=["nope"])
    with pytest.raises(ConfigError, match="unknown mode"):
        reproduce("medium", tmp_path)
