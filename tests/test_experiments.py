"""Verdict logic of every reproduction claim on synthetic inputs: data that satisfies the
claim passes, data that violates it fails. Plus the report writer and one smoke pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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
from bnstruct.experiments._common import Claim, SweepResult, middle_layers


def _layers(depths, *, k=2, n_near=2, sk1=lambda L: 0.3 * (L / 8) ** -0.5, mid_rank=2.1,
            end_rank=5.0):
    rows = []
    for L in depths:
        mids = set(middle_layers(L))
        for l in range(1, L + 1):
            mid = l in mids
            rows.append({"depth": L, "layer": l, "middle": mid, "n_near_1": n_near if mid else 5,
                         "s_k1": sk1(L) if mid else 0.8, "mean_align": 0.1,
                         "rep_rank": mid_rank if mid else end_rank,
                         "rep_rank_uncentered": 1.5, "rep_rank_threshold": 3.0 if mid else 6.0,
                         "s1": 1.0, "s2": 1.0, "s3": sk1(L)})
    return pd.DataFrame(rows)


def _sweep(norms=lambda L: 2 * L + 5.0, depths=(6, 9, 12, 16), slack=1.0, **kw):
    nets = pd.DataFrame({"depth": list(depths), "param_norm2": [norms(L) for L in depths],
                         "c1": [norms(L) - 2 * L for L in depths],
                         "log_pdet2_max": [1.0] * len(depths), "min_slack": [slack] * len(depths)})
    b = pd.DataFrame({"depth": np.repeat(depths, 3), "slack": slack, "lhs": 1.0,
                      "rhs": 1.0 + slack, "param_norm2": 50.0, "log_pdet2": 1.0})
    return SweepResult(2, nets, _layers(depths, **kw), b)


def test_registry_has_every_claim_with_all_modes():
    assert list(EXPERIMENTS) == ["linear", "norm-vs-depth", "weight-spectra",
                                 "representation-rank", "bound", "learning-rate",
                                 "narrow-minima", "symmetry", "digits"]
    for mod in EXPERIMENTS.values():
        assert set(mod.CONFIGS) == {"smoke", "quick", "full"}


def test_middle_layers():
    assert middle_layers(12) == list(range(4, 10))
    assert middle_layers(1) == [1]
    assert middle_layers(2) == [1]


def test_linear_verdict():
    d = pd.DataFrame({"depth": [2, 4, 8], "param_norm2": 1.0, "linear_cost": 1.0,
                      "cost_rel_err": [1e-4, 5e-3, 9e-3], "rank": 3})
    lay = pd.DataFrame({"depth": [2, 4, 8], "layer": 1, "i": 1, "s": 1.0, "predicted": 1.0,
                        "rel_err": [1e-3, 0.015, 0.0]})
    assert linear.verdict(linear.Result(d, lay)).passed
    assert not linear.verdict(linear.Result(d.assign(cost_rel_err=[0, 0.02, 0]), lay)).passed
    assert not linear.verdict(linear.Result(d, lay.assign(rel_err=[0, 0.03, 0]))).passed
    assert not linear.verdict(linear.Result(d.iloc[:2], lay.iloc[:2])).passed  # 2 depths


def test_norm_vs_depth_verdict():
    c = norm_vs_depth.verdict(_sweep())
    assert c.passed and abs(c.values["R0"] - 2) < 1e-9
    assert not norm_vs_depth.verdict(_sweep(norms=lambda L: 3.5 * L + 5)).passed
    assert not norm_vs_depth.verdict(_sweep(depths=(6, 9, 12))).passed  # < 4 depths


def test_weight_spectra_verdict():
    c = weight_spectra.verdict(_sweep())
    assert c.passed and c.values["exponent"] == pytest.approx(-0.5)
    assert not weight_spectra.verdict(_sweep(n_near=3)).passed  # k+1 near 1
    assert not weight_spectra.verdict(_sweep(sk1=lambda L: 0.2)).passed  # does not fall
    assert not weight_spectra.verdict(_sweep(sk1=lambda L: 0.9 * (L / 8) ** -0.5)).passed
    assert c.values["exponent_err"] == pytest.approx(0.0, abs=1e-9)  # exact power law
    assert "±" in c.measured and "off the count: none" in c.measured
    one = _sweep()  # one middle layer with k+1 values near 1: the median hides it, not the check
    i = one.layers.index[one.layers["middle"]][0]
    one.layers.loc[i, "n_near_1"] = 3
    c = weight_spectra.verdict(one)
    assert not c.passed and "3 near 1" in c.measured.split("off the count:")[1]


def test_loglog_fit_standard_error():
    rng = np.random.default_rng(0)
    x = np.array([8, 10, 12, 14, 16, 20.0])
    y = x ** -0.5 * np.exp(0.1 * rng.standard_normal(x.size))
    b, se = weight_spectra.loglog_fit(x, y)
    ref = np.polyfit(np.log(x), np.log(y), 1, cov=True)
    assert b == pytest.approx(ref[0][0]) and se == pytest.approx(np.sqrt(ref[1][0, 0]))
    assert np.isnan(weight_spectra.loglog_fit(x[:2], y[:2])[1])


def test_representation_rank_verdict():
    c = representation_rank.verdict(_sweep())
    assert c.passed and "L=6: 3" in c.measured  # the threshold count is shown, not judged
    assert not representation_rank.verdict(_sweep(mid_rank=2.7)).passed
    assert not representation_rank.verdict(_sweep(end_rank=1.5, mid_rank=2.0)).passed


def test_bound_verdict():
    assert bound.verdict(_sweep(slack=0.0)).passed
    assert not bound.verdict(_sweep(slack=-1e-3)).passed


def _lr_frame(ntk=lambda L, c: 0.5 / c, hess=lambda lr: 1.8 / lr):
    rows = []
    for L in (4, 8, 12):
        for c in (0.25, 0.5, 1.0):
            lr = c / L
            rows.append({"depth": L, "c": c, "lr": lr, "status": "completed", "rel_fit": 0.01,
                         "two_over_lr": 2 / lr, "ntk_per_NL": ntk(L, c), "hessian_max": hess(lr),
                         "n_up": 0, "converged": True})
    return pd.DataFrame(rows)


def test_learning_rate_verdict():
    assert learning_rate.verdict(_lr_frame()).passed
    assert not learning_rate.verdict(_lr_frame(ntk=lambda L, c: 0.2 * L / c)).passed  # unbounded
    assert not learning_rate.verdict(_lr_frame(ntk=lambda L, c: 0.5 * c)).passed  # increasing
    assert not learning_rate.verdict(_lr_frame(hess=lambda lr: 2.5 / lr)).passed
    df = _lr_frame()
    df.loc[0, "status"] = "diverged"
    df.loc[0, "ntk_per_NL"] = np.nan
    assert learning_rate.verdict(df).passed  # a diverged run is reported, not counted
    grow = learning_rate.verdict(_lr_frame(ntk=lambda L, c: 0.08 * L / c))
    assert "c=0.5: 1.00" in grow.measured  # growth with depth is shown (no verdict on it)
    eos = _lr_frame(hess=lambda lr: 2.3 / lr).assign(n_up=50, converged=False)
    c = learning_rate.verdict(eos)  # edge of stability above 2/lr (+10%): fails, flagged
    assert not c.passed and c.values["n_converged"] == 0


def test_learning_rate_probe_detects_edge_of_stability():
    import torch

    from bnstruct.experiments._common import _to64

    torch.manual_seed(0)
    X = torch.randn(32, 3, dtype=torch.float64)
    Y = X @ torch.randn(3, 2, dtype=torch.float64) + torch.randn(32, 2, dtype=torch.float64)
    model = _to64(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    Xb = torch.cat([X, torch.ones(32, 1, dtype=torch.float64)], 1)  # the bias is a parameter
    eig = torch.linalg.eigvalsh(2 * (Xb.T @ Xb) / 32).max().item()  # sharpness (lam = 0)
    assert learning_rate.probe(model, X, Y, 0.0, 0.5 / eig, steps=50) == 0  # lr < 2/sharpness
    assert learning_rate.probe(model, X, Y, 0.0, 2.2 / eig, steps=50) > 20  # oscillates


def test_narrow_minima_verdict():
    def frame(r1):
        return pd.DataFrame({"solution": ["rank 2", "rank 1"], "depth": 12,
                             "param_norm2": 50.0, "rel_fit": [0.01, 0.3],
                             "ntk_per_NL": [1.0, r1]})
    assert narrow_minima.verdict(frame(5.0)).passed
    assert not narrow_minima.verdict(frame(1.3)).passed


def test_symmetry_verdict():
    base = dict(layers=pd.DataFrame(), layer=6, rank=2.1, change_axis=0.02, change_random=0.8,
                r2=(0.97, 0.95), pca=np.zeros((3, 2)), invariants=np.zeros((3, 2)))
    assert symmetry.verdict(symmetry.Result(**base)).passed
    for bad in ({"rank": 2.9}, {"change_axis": 0.2}, {"r2": (0.97, 0.5)}):
        assert not symmetry.verdict(symmetry.Result(**{**base, **bad})).passed


def test_digits_finding():
    nets = pd.DataFrame({"depth": [6], "rep_rank_middle": [3.2], "n_near_1_middle": [4.0],
                         "k": [3], "test_accuracy": [0.9], "min_slack": [2.0],
                         "slack_ok": [True]})
    c = digits.verdict(digits.Result(nets, pd.DataFrame()))
    assert c.passed and c.kind == "finding"
    assert not digits.verdict(digits.Result(nets.assign(slack_ok=False), pd.DataFrame())).passed


def test_write_report(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bnstruct.report import write_report

    fig_path = tmp_path / "figures" / "f.png"
    fig_path.parent.mkdir()
    plt.figure(figsize=(1, 1))
    plt.savefig(fig_path)
    plt.close("all")
    claims = [Claim("a", "stmt a", "1.0", "1", "0.5", True, 1.0, (str(fig_path),),
                    {"x": float("nan"), "arr": np.arange(2)}),
              Claim("b", "stmt | b", "3.0", "1", "0.5", False, 2.0)]
    paths = write_report(claims, tmp_path, mode="quick", seconds=3.0)
    data = json.loads(paths["json"].read_text())
    assert [c["name"] for c in data["claims"]] == ["a", "b"]
    assert data["claims"][0]["figures"] == ["figures/f.png"]
    assert data["claims"][0]["values"] == {"x": None, "arr": [0, 1]}
    assert data["meta"]["passed"] is False
    md = paths["md"].read_text()
    assert "| a | pass |" in md and "| b | FAIL |" in md and "stmt \\| b" not in md.split("##")[0]
    html = paths["html"].read_text()
    assert "data:image/png;base64," in html and "FAIL" in html


def test_reproduce_smoke_pipeline(tmp_path):
    """Two tiny claims through the real pipeline; a second call reuses the stored runs."""
    import time

    from bnstruct.report import reproduce

    claims = reproduce("smoke", tmp_path, only=["norm-vs-depth", "bound"])
    assert [c.name for c in claims] == ["norm-vs-depth", "bound"]
    assert all(not c.measured.startswith("error") for c in claims)
    assert claims[1].passed  # the inequality is a theorem: it holds at any size
    for f in ("claims.json", "claims.md", "report.html"):
        assert (tmp_path / f).exists()
    assert all((tmp_path / "figures").glob("*.png"))
    t0 = time.perf_counter()
    again = reproduce("smoke", tmp_path, only=["norm-vs-depth"])
    assert time.perf_counter() - t0 < 20
    assert again[0].values["R0"] == pytest.approx(claims[0].values["R0"])
    data = json.loads((tmp_path / "claims.json").read_text())  # --only updates in place
    assert [c["name"] for c in data["claims"]] == ["norm-vs-depth", "bound"]
    assert data["meta"]["carried_over"] == ["bound"]
    assert data["claims"][1]["figures"] == [str(Path(f).relative_to(tmp_path))
                                            for f in claims[1].figures]
    assert "kept from the earlier report: bound" in (tmp_path / "claims.md").read_text()
    data["meta"]["mode"] = "quick"  # a report of another mode is replaced, not merged
    (tmp_path / "claims.json").write_text(json.dumps(data))
    reproduce("smoke", tmp_path, only=["bound"])
    data = json.loads((tmp_path / "claims.json").read_text())
    assert [c["name"] for c in data["claims"]] == ["bound"] and data["meta"]["mode"] == "smoke"


def test_reproduce_rejects_unknown(tmp_path):
    from bnstruct.errors import ConfigError
    from bnstruct.report import reproduce

    with pytest.raises(ConfigError, match="unknown experiment"):
        reproduce("smoke", tmp_path, only=["nope"])
    with pytest.raises(ConfigError, match="unknown mode"):
        reproduce("medium", tmp_path)


def test_layer_table_against_numpy_forward():
    import torch

    from bnstruct import MLP
    from bnstruct.experiments._common import NEAR_ONE, layer_table

    torch.manual_seed(1)
    model = MLP(3, 6, 4, 2).double()
    X = torch.randn(40, 3, dtype=torch.float64)
    t = layer_table(model, X, k=2)
    Ws = [m.weight.detach().numpy() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    bs = [m.bias.detach().numpy() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    a = X.numpy()
    for l, (W, b) in enumerate(zip(Ws, bs, strict=True), start=1):
        a = a @ W.T + b
        if l < len(Ws):
            a = np.maximum(a, 0.0)
        row = t.iloc[l - 1]
        s = np.linalg.svd(W, compute_uv=False)
        np.testing.assert_allclose(row[[f"s{i + 1}" for i in range(s.size)]].to_numpy(float), s,
                                   rtol=1e-10, atol=1e-12)
        assert row["n_near_1"] == int(((s >= NEAR_ONE[0]) & (s <= NEAR_ONE[1])).sum())
        assert row["s_k1"] == pytest.approx(s[2] if s.size > 2 else 0.0, rel=1e-10, abs=1e-12)
        r = np.linalg.svd(a - a.mean(0), compute_uv=False)
        assert row["rep_rank"] == pytest.approx((r ** 2).sum() ** 2 / (r ** 4).sum(), rel=1e-9)
        assert row["rep_rank_threshold"] == int((r > 0.1 * r[0]).sum())
