"""Claims v2 (issue 12): claim 6 `learning-rate` (bound, monotone in c, sharpness, saturation,
"large learning rates are required") and claim 10 `representation-convergence`.

Each verdict part is fed synthetic measurements that violate it (the claim must fail) and
ones that satisfy it (it must pass); ``linear_cka`` is checked against the HSIC form with an
explicit centering matrix; both claims run plan -> train -> measure -> verdict at smoke size.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from bnstruct.conventions import middle_layers
from bnstruct.errors import ConfigError
from bnstruct.experiments import EXPERIMENTS, learning_rate, representation_convergence
from bnstruct.experiments.representation_convergence import Result, layer_at, linear_cka

LR = learning_rate.CONFIGS["quick"]
RC = representation_convergence.CONFIGS["quick"]
LARGE, SMALL = learning_rate.LARGE, learning_rate.SMALL


# --------------------------------------------------------------------------- linear CKA


def _cka_hsic(X: np.ndarray, Y: np.ndarray) -> float:
    """Reference: tr(K H L H) / sqrt(tr(K H K H) tr(L H L H)), K = X X^T, L = Y Y^T,
    H = I - 11^T / N (float64)."""
    N = X.shape[0]
    H = np.eye(N) - np.ones((N, N)) / N
    K, Lm = X @ X.T, Y @ Y.T
    return float(np.trace(K @ H @ Lm @ H)
                 / np.sqrt(np.trace(K @ H @ K @ H) * np.trace(Lm @ H @ Lm @ H)))


def test_linear_cka_matches_the_hsic_form():
    rng = np.random.default_rng(0)
    for n, p, q in ((50, 3, 7), (40, 10, 2), (30, 5, 5)):
        X = rng.standard_normal((n, p)) + 2.0
        Y = np.maximum(X @ rng.standard_normal((p, q)) + rng.standard_normal((n, q)), 0)
        np.testing.assert_allclose(linear_cka(X, Y), _cka_hsic(X, Y), rtol=1e-10, atol=0)
        np.testing.assert_allclose(linear_cka(torch.from_numpy(X).float(), Y),
                                   _cka_hsic(X.astype(np.float32).astype(float), Y),
                                   rtol=1e-10, atol=0)  # torch input, computed in float64


def test_linear_cka_invariances():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((60, 6)), rng.standard_normal((60, 4))
    Y = Y + X[:, :4]
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    ref = linear_cka(X, Y)
    np.testing.assert_allclose(linear_cka(X @ Q, Y), ref, rtol=1e-10)  # orthogonal
    np.testing.assert_allclose(linear_cka(3.7 * X, 0.01 * Y), ref, rtol=1e-10)  # isotropic scale
    np.testing.assert_allclose(linear_cka(X + 5.0, Y - 2.0), ref, rtol=1e-10)  # centered
    np.testing.assert_allclose(linear_cka(X, X), 1.0, rtol=1e-12)
    np.testing.assert_allclose(linear_cka(X, X @ Q * 2.0), 1.0, rtol=1e-12)
    A = X.copy()
    A[:, 0] *= 10.0  # an anisotropic rescaling is not an invariance
    assert linear_cka(A, X) < 0.9
    assert 0.0 <= ref <= 1.0
    assert math.isnan(linear_cka(np.ones((10, 3)), rng.standard_normal((10, 2))))
    with pytest.raises(ConfigError, match="same points"):
        linear_cka(X, Y[:10])


def test_layer_at_relative_depth():
    assert [layer_at(p, 10) for p in (0.25, 0.5, 0.75)] == [3, 5, 8]  # half-up, not banker's
    assert [layer_at(p, 8) for p in (0.25, 0.5, 0.75)] == [2, 4, 6]
    assert layer_at(0.0, 5) == 1 and layer_at(1.0, 5) == 4  # a hidden layer, never the output


# --------------------------------------------------------------------------- claim 10 verdict


def _rc_result(median_d, depths=(8, 10, 12, 14, 16, 20), seeds=(0, 1, 2)):
    nets = pd.DataFrame([{"run": f"L{L}-s{s}", "depth": L, "seed": s,
                          "median_d": median_d(L, s), "mean_d": median_d(L, s),
                          "max_d": median_d(L, s), "n_pairs": 3, "ntk_per_NL": 10.0,
                          "rel_fit": 0.05} for L in depths for s in seeds])
    pairs = pd.DataFrame({"depth": nets["depth"], "seed": nets["seed"], "layer": 3,
                          "d": nets["median_d"]})
    cross = pd.DataFrame([{"seed": s, "p": p, "depth": a, "depth_next": b,
                           "layer": layer_at(p, a), "layer_next": layer_at(p, b), "cka": 0.9}
                          for s in seeds for p in (0.25, 0.5, 0.75)
                          for a, b in zip(depths[:-1], depths[1:], strict=True)])
    return Result(nets, pairs, cross)


def _noise(L, s, amp):
    return math.exp(amp * math.sin(7.3 * L + 3.1 * s))  # deterministic multiplicative scatter


def test_representation_convergence_verdict():
    ok = representation_convergence.verdict(
        _rc_result(lambda L, s: 1e-3 * (8 / L) * _noise(L, s, 0.1)), RC)
    assert ok.passed and ok.values["slope"] == pytest.approx(-1.0, abs=0.1)
    assert "±" in ok.measured and "p=0.5" in ok.measured
    flat = _rc_result(lambda L, s: 1e-3 * _noise(L, s, 0.1))
    assert not representation_convergence.verdict(flat, RC).passed
    rising = _rc_result(lambda L, s: 1e-3 * (L / 8) * _noise(L, s, 0.1))
    assert not representation_convergence.verdict(rising, RC).passed
    # falls on average, but not beyond 2 SE: the scatter hides it
    noisy = _rc_result(lambda L, s: 1e-3 * (8 / L) ** 0.3 * _noise(L, s, 1.5))
    c = representation_convergence.verdict(noisy, RC)
    assert c.values["slope"] < 0 and not c.passed
    one = _rc_result(lambda L, s: 1e-3 * (8 / L), seeds=(0,), depths=(8, 10))  # no SE
    assert not representation_convergence.verdict(one, RC).passed
    assert not representation_convergence.verdict(
        _rc_result(lambda L, s: 0.0 if L == 20 else 1e-3 * (8 / L)), RC).passed  # log(0)


# --------------------------------------------------------------------------- claim 6 verdict


def _lr_frame(ntk=lambda L, c, s: 0.8 / c * (1 - math.exp(-L / 4)) * (1 + 0.01 * s),
              small=lambda L, s: 2.0 * L * (1 + 0.02 * s), hess=lambda lr: 1.8 / lr):
    """Satisfies every part by default: bounded and saturating at each c, decreasing in c,
    sharpness below 2/lr, small-lr NTK/(NL) growing like L."""
    rows = []
    for L in LR.depths:
        for c in LR.cs:
            for s in LR.seeds:
                lr = c / L
                rows.append({"protocol": LARGE, "depth": L, "c": c, "seed": s, "lr": lr,
                             "status": "completed", "rel_fit": 0.05, "two_over_lr": 2 / lr,
                             "param_norm2": 100.0, "ntk_per_NL": ntk(L, c, s),
                             "hessian_max": hess(lr), "n_up": 0, "converged": True,
                             "obj_drift": 0.1})
        for s in LR.seeds:
            rows.append({"protocol": SMALL, "depth": L, "c": math.nan, "seed": s, "lr": 4e-4,
                         "status": "completed", "rel_fit": 0.02, "two_over_lr": 5e3,
                         "param_norm2": 30.0, "ntk_per_NL": small(L, s),
                         "hessian_max": math.nan, "n_up": 0, "converged": True,
                         "obj_drift": 0.01})
    return pd.DataFrame(rows)


def _parts(c):
    return {k: c.values[k] for k in ("bound_ok", "monotone_ok", "hessian_ok", "saturation_ok",
                                     "required_ok")}


def test_learning_rate_verdict_passes_when_every_part_holds():
    c = learning_rate.verdict(_lr_frame(), LR)
    assert c.passed and all(_parts(c).values()), _parts(c)
    for s in c.values["saturation"].values():
        assert s["slope_deep"] < s["slope_shallow"] < 1.0 and s["se_deep"] >= 0
    assert c.values["required"]["grows"] and "±" in c.measured


@pytest.mark.parametrize("bad, part", [
    # (a) one run above (1 + REL_TOL)/c: every run is checked, not a mean
    ("above_bound", "bound_ok"),
    # (b) increasing in c
    ("increasing_in_c", "monotone_ok"),
    # (c) sharper than 2/lr by more than REL_TOL
    ("sharp", "hessian_ok"),
    # (d) grows like L at every depth though still below 1/c at these depths
    ("linear_growth", "saturation_ok"),
    # (d) accelerating growth (deeper slope larger than the shallower)
    ("accelerating", "saturation_ok"),
    # (e) small-lr NTK flat and below the large-lr bound
    ("small_flat_low", "required_ok"),
])
def test_learning_rate_verdict_fails_each_part(bad, part):
    assert LR.depths == (4, 6, 8, 12, 16)  # the frames below are built for these depths
    base = _lr_frame()
    frames = {
        "above_bound": base.assign(ntk_per_NL=np.where(
            (base["depth"] == 8) & (base["c"] == 0.125) & (base["seed"] == 2),
            1.15 / 0.125, base["ntk_per_NL"])),
        # (below each bound, judged at c = 1/8, but larger for larger c)
        "increasing_in_c": _lr_frame(ntk=lambda L, c, s: (2 + 40 * c) * (1 - math.exp(-L / 4))),
        "sharp": _lr_frame(hess=lambda lr: 2.5 / lr),
        # (the small-lr runs grow faster still, so that only (d) is violated)
        # (past half its bound at L = 8, so judged, and still below it at L = 16)
        "linear_growth": _lr_frame(ntk=lambda L, c, s: 0.065 * L / c * (1 + 0.01 * s),
                                   small=lambda L, s: 0.5 * L ** 2 * (1 + 0.02 * s)),
        "accelerating": _lr_frame(ntk=lambda L, c, s: ACCEL[L] / c * (1 + 0.01 * s),
                                  small=lambda L, s: 0.05 * L ** 3 * (1 + 0.02 * s)),
        "small_flat_low": _lr_frame(small=lambda L, s: 5.0 * (1 + 0.02 * s)),
    }
    c = learning_rate.verdict(frames[bad], LR)
    parts = _parts(c)
    assert not c.passed and not parts[part]
    assert all(v for k, v in parts.items() if k != part), parts  # only the violated part
    words = {"bound_ok": "a bound", "monotone_ok": "b decreasing in c", "hessian_ok": "c hessian",
             "saturation_ok": "d saturation", "required_ok": "e small lr"}
    assert c.measured.split("failed: ")[1].startswith(words[part])


#: ntk_max/(NL) * c per depth of a curve flat over the shallower half, then climbing
ACCEL = {4: 0.5, 6: 0.52, 8: 0.55, 12: 0.75, 16: 1.05}


def test_learning_rate_saturation_is_judged_only_near_the_bound():
    # c = 1/32 still climbs like L but is at 0.3 of its bound at L = 8: reported, not judged;
    # the other two saturate near theirs: the verdict passes
    c = learning_rate.verdict(_lr_frame(ntk=lambda L, c, s: (
        0.0375 * L / c if c == 0.03125 else 0.6 / c * (1 - math.exp(-L / 4))),
        small=lambda L, s: 0.5 * L ** 2 * (1 + 0.02 * s)), LR)
    s = c.values["saturation"]
    assert c.passed and not s["0.03125"]["judged"] and s["0.125"]["judged"]
    np.testing.assert_allclose(s["0.03125"]["share"], 0.3, rtol=1e-12)
    assert "not judged: at 0.30 of its bound" in c.measured and "(2 of 3 c judged)" in c.key
    # no c reaches half its bound: saturation cannot be seen, and that fails
    c = learning_rate.verdict(_lr_frame(ntk=lambda L, c, s: 0.03 * L / c,
                                        small=lambda L, s: 0.5 * L ** 2), LR)
    assert not c.passed and not c.values["saturation_ok"]
    assert "cannot be seen at these depths" in c.why
    # a deeper half spanning less than 2x in L cannot judge a slope
    short = dataclasses.replace(LR, depths=(4, 6, 8, 10, 12))
    frame = _lr_frame()
    frame = frame[frame["depth"] != 16]
    frame = pd.concat([frame, _lr_frame().query("depth == 12").assign(depth=10)])
    c = learning_rate.verdict(frame, short)
    assert not c.values["saturation_ok"] and "spans only a factor 1.5" in c.why


def test_learning_rate_required_half_either_way():
    # flat but above every large-lr bound (1.1/min(c) = 35.2) at the deepest depth: passes
    c = learning_rate.verdict(_lr_frame(small=lambda L, s: 40.0 * (1 + 0.01 * s)), LR)
    r = c.values["required"]
    assert c.passed and r["above"] and not r["grows"]
    # above that bound on average, but within 2 SE of it: fails
    c = learning_rate.verdict(_lr_frame(small=lambda L, s: 36.0 * (1 + 0.4 * (s - 1))), LR)
    assert not c.values["required"]["ok"]
    # growing like L: faster than every large-lr c (the control saturates), beyond 2 SE
    c = learning_rate.verdict(_lr_frame(small=lambda L, s: 3.0 * L * (1 + 0.01 * s)), LR)
    assert c.values["required"]["grows"] and c.passed
    # small-lr runs that behave like the large-lr runs (the same growth, inside the bounds)
    # fail: growing with L and above 1/max(c) is not enough, the large-lr runs do that too
    like = _lr_frame(small=lambda L, s: 0.8 / 0.03125 * (1 - math.exp(-L / 4)) * (1 + 0.01 * s))
    c = learning_rate.verdict(like, LR)
    r = c.values["required"]
    assert r["slope"] > 0 and r["deepest_mean"] > 8 and not r["ok"] and not c.passed
    # no trained small-lr run (all collapsed): fails
    df = _lr_frame()
    df.loc[df["protocol"] == SMALL, "status"] = "collapsed"
    c = learning_rate.verdict(df, LR)
    assert not c.passed and "0 trained" in c.measured and "collapsed" in c.measured


def test_learning_rate_verdict_skips_diverged_runs_and_flags_eos():
    df = _lr_frame()
    df.loc[0, "status"] = "diverged"
    df.loc[0, "ntk_per_NL"] = np.nan
    c = learning_rate.verdict(df, LR)
    assert c.passed and "1 diverged" in c.measured  # reported, not counted
    eos = _lr_frame(hess=lambda lr: 2.3 / lr)
    eos.loc[eos["protocol"] == LARGE, ["n_up", "converged"]] = (50, False)
    c = learning_rate.verdict(eos, LR)
    assert not c.passed and c.values["n_converged"] == 0


def test_saturation_halves_share_the_middle_depth():
    assert learning_rate._halves([4, 6, 8, 10, 12]) == ([4, 6, 8], [8, 10, 12])
    assert learning_rate._halves([4, 8, 12, 16]) == ([4, 8], [12, 16])
    g = pd.DataFrame({"depth": [4, 6, 8, 10, 12], "ntk_per_NL": [1.5, 2.25, 3.0, 3.0, 3.0]})
    s = learning_rate.saturation(g)  # flat from L = 8 on: the deeper slope is 0
    assert s["saturated"] and s["slope_deep"] == pytest.approx(0.0, abs=1e-12)
    assert s["slope_shallow"] == pytest.approx(1.0, abs=0.05)
    g = g.assign(ntk_per_NL=[1.0, 1.0, 1.0, 1.3, 1.6])  # flat, then rising: not saturated
    assert not learning_rate.saturation(g)["saturated"]


def test_learning_rate_plan_matches_its_grid():
    for mode in ("smoke", "quick", "full"):
        cfg = learning_rate.CONFIGS[mode]
        plan, grid = learning_rate.plan(cfg), learning_rate._grid(cfg)
        assert len(plan) == len(grid) == len(cfg.depths) * len(cfg.seeds) * (len(cfg.cs) + 1)
        assert len(cfg.seeds) >= 2 and len(cfg.depths) >= 3
        for rc, (proto, L, c, s) in zip(plan, grid, strict=True):
            assert rc.model.depth == L and rc.seed == s
            if proto == LARGE:
                assert rc.stages[-1].optimizer == "gd"
                assert rc.stages[-1].lr == pytest.approx(c / L)
            else:
                assert {st.optimizer for st in rc.stages} == {"adam"}
    q, f = learning_rate.CONFIGS["quick"], learning_rate.CONFIGS["full"]
    assert len(q.depths) >= 5 and len(q.seeds) >= 3 and q.width == 32 and q.n_train == 128
    assert max(f.depths) >= 24 and len(f.seeds) >= 3
    assert q.cs == f.cs


def test_registry_and_statement_follow_the_config():
    assert list(EXPERIMENTS).index("regime-map") == \
        list(EXPERIMENTS).index("representation-convergence") + 1
    assert list(EXPERIMENTS).index("representation-convergence") == \
        list(EXPERIMENTS).index("digits") + 1
    assert representation_convergence.KIND == "claim"
    st = representation_convergence.statement(RC)
    assert ", ".join(map(str, RC.sweep.depths)) in st and "0.25, 0.5, 0.75" in st
    st = learning_rate.statement(LR)
    assert ", ".join(map(str, LR.depths)) in st and f"{len(LR.seeds)} seeds" in st


# --------------------------------------------------------------------------- smoke pipelines


def test_representation_convergence_smoke_pipeline(tmp_path, one_thread):
    """Train the smoke sweep, measure, judge, draw; the per-net median d against an
    independent NumPy forward pass and the HSIC-form CKA."""
    from bnstruct.executors import LocalExecutor, execute
    from bnstruct.experiments._records import Memo

    cfg = representation_convergence.CONFIGS["smoke"]
    runs = execute(representation_convergence.plan(cfg), tmp_path / "runs",
                   executor=LocalExecutor(workers=1))
    memo = Memo()
    res = representation_convergence.measure(cfg, runs, memo=memo)
    n = len(memo)
    representation_convergence.measure(cfg, runs, memo=memo)
    assert len(memo) == n  # measured once per memo
    assert len(res.nets) == len(runs) and set(res.cross["p"]) == set(cfg.ps)
    r = runs[-1]
    L = r.config.model.depth
    lin = [m for m in r.model.modules() if isinstance(m, torch.nn.Linear)]
    a = r.task.X.double().numpy()
    reps = []
    for i, m in enumerate(lin):
        a = a @ m.weight.detach().double().numpy().T + m.bias.detach().double().numpy()
        a = np.maximum(a, 0) if i < L - 1 else a
        reps.append(a)
    mids = middle_layers(L)
    d = [1 - _cka_hsic(reps[l - 1], reps[l]) for l in mids if l + 1 in mids]
    row = res.nets.iloc[-1]
    np.testing.assert_allclose(row["median_d"], np.median(d), rtol=1e-6, atol=1e-10)
    claim = representation_convergence.verdict(res, cfg)
    assert claim.kind == "claim" and isinstance(claim.passed, bool)
    figs = representation_convergence.figures(res, tmp_path / "figures")
    assert all(p.exists() for p in figs)


def test_learning_rate_smoke_pipeline(tmp_path, one_thread):
    from bnstruct.executors import LocalExecutor, execute

    cfg = learning_rate.CONFIGS["smoke"]
    runs = execute(learning_rate.plan(cfg), tmp_path / "runs",
                   executor=LocalExecutor(workers=1))
    df = learning_rate.measure(cfg, runs)
    assert list(df["protocol"]) == [g[0] for g in learning_rate._grid(cfg)]
    done = df[df["status"] == "completed"]
    assert done["ntk_per_NL"].notna().all()
    assert done.loc[done["protocol"] == LARGE, "hessian_max"].notna().all()
    claim = learning_rate.verdict(df, cfg)
    assert isinstance(claim.passed, bool) and "runs:" in claim.measured
    figs = learning_rate.figures(df, tmp_path / "figures")
    assert all(p.exists() for p in figs)
