"""The bottleneck bound, analyze(), bad inputs and the ``analyze`` CLI command."""

import json
import math

import numpy as np
import pytest
import torch
from cases import NET_CASES, build
from torch import nn

import bnstruct as bn
from bnstruct.cli import main
from bnstruct.diagnostics import reference as ref
from bnstruct.testing import assert_close

F64 = torch.float64


def _random_net(i: int) -> nn.Module:
    """Net number ``i`` of the bound's random family: depth 1-6, widths 1-6, bias on/off,
    per-layer scales exp(U(-1.5, 1.5)), some leaky slopes in [-1, 1]."""
    g = np.random.default_rng(i)
    depth = int(g.integers(1, 7))
    sizes = [int(v) for v in g.integers(1, 7, size=depth + 1)]
    bias = bool(g.integers(0, 2))
    mods: list[nn.Module] = []
    for l in range(depth):
        lin = nn.Linear(sizes[l], sizes[l + 1], bias=bias, dtype=F64)
        with torch.no_grad():
            scale = math.exp(g.uniform(-1.5, 1.5)) / math.sqrt(sizes[l])
            lin.weight.copy_(torch.from_numpy(g.standard_normal(lin.weight.shape)) * scale)
            if bias:
                lin.bias.copy_(torch.from_numpy(0.5 * g.standard_normal(sizes[l + 1])))
        mods.append(lin)
        if l < depth - 1:
            mods.append(nn.LeakyReLU(float(g.uniform(-1, 1))) if i % 4 == 0 else nn.ReLU())
    return nn.Sequential(*mods)


def _pts(d_in: int, n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --- the bottleneck inequality ---------------------------------------------------------

def test_bound_holds_on_hundreds_of_random_nets_and_every_k():
    worst = (math.inf, None)
    checked = 0
    for i in range(300):
        net = _random_net(i)
        sizes = [net[0].in_features] + [m.out_features for m in net if isinstance(m, nn.Linear)]
        X = _pts(sizes[0], 4, i)
        for k in range(min(sizes) + 1):
            df = bn.bottleneck_bound(net, X, k)
            scale = 1.0 + float(df["lhs"].abs().max()) + float(df["c1"].abs().max())
            rel = float(df["slack"].min()) / scale
            assert not df["slack"].isna().any(), (i, k)
            if rel < worst[0]:
                worst = (rel, (i, k))
            checked += 1
    assert checked > 600
    assert worst[0] >= -1e-12, f"bound violated: relative slack {worst[0]:.3g} at (net, k) = " \
                               f"{worst[1]}"


def test_bound_sides_match_independent_numpy_computation():
    for i in range(40):
        net = _random_net(1000 + i)
        Ws = [m.weight.detach().numpy() for m in net if isinstance(m, nn.Linear)]
        bs = [m.bias.detach().numpy() for m in net if isinstance(m, nn.Linear)
              and m.bias is not None]
        X = _pts(Ws[0].shape[1], 5, i)
        J = ref.jacobian_reference(net, X, F64).numpy()  # torch.func, not the recursion
        sJ = np.linalg.svd(J, compute_uv=False)
        norm2 = sum((W ** 2).sum() for W in Ws) + sum((b ** 2).sum() for b in bs)
        for k in range(min(min(W.shape) for W in Ws) + 1):
            svs = [np.linalg.svd(W, compute_uv=False) for W in Ws]
            lhs = sum((s[k:] ** 2).sum() + (s[:k] ** 2 - 1 - np.log(s[:k] ** 2)).sum()
                      for s in svs)
            rank_ok = sJ[:, k - 1] > sJ[:, 0] * max(J.shape[1:]) * np.finfo(float).eps \
                if k else np.ones(len(X), bool)
            with np.errstate(divide="ignore"):
                lp2 = np.where(rank_ok, 2 * np.log(sJ[:, :k]).sum(1), -np.inf)
            rhs = norm2 - k * len(Ws) - lp2
            df = bn.bottleneck_bound(net, X, k)
            assert_close(df["lhs"], np.full(len(X), lhs), rtol=1e-10, atol=1e-12,
                         what=f"lhs net {i} k {k}")
            assert_close(df["rhs"], rhs, rtol=1e-10, atol=1e-12, what=f"rhs net {i} k {k}")
            assert_close(df["c1"], np.full(len(X), norm2 - k * len(Ws)), rtol=1e-12,
                         atol=1e-12, what="c1")


def test_bound_is_tight_for_orthogonal_deep_linear_nets():
    """All singular values 1 and k = width: lhs = 0, c1 = 0, log|J|_k = 0, slack = 0."""
    m = bn.DeepLinear(5, 5, 4, 5, seed=0, dtype=F64)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for lin in m.layers:
            lin.weight.copy_(torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=F64))[0])
    df = bn.bottleneck_bound(m, _pts(5, 3, 0), 5)
    for col in ("lhs", "rhs", "slack", "c1", "log_pdet2"):
        assert_close(df[col], np.zeros(3), rtol=0, atol=1e-12, what=col)
    assert list(df.columns) == ["point", "k", "lhs", "rhs", "slack", "tail", "head", "c1",
                                "log_pdet2", "param_norm2"]


# --- analyze ---------------------------------------------------------------------------

S_PLANTED = (1.3, 1.1, 0.9)


def _planted(depth: int = 5, width: int = 8, d: int = 6) -> bn.DeepLinear:
    """Deep linear net whose every W_l = U diag(1.3, 1.1, 0.9, 0, ...) V^T: rank 3."""
    m = bn.DeepLinear(d, width, depth, d, seed=0, dtype=F64)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for lin in m.layers:
            o, i = lin.weight.shape
            U = torch.linalg.qr(torch.randn(o, o, generator=g, dtype=F64))[0][:, :3]
            V = torch.linalg.qr(torch.randn(i, i, generator=g, dtype=F64))[0][:, :3]
            lin.weight.copy_(U @ torch.diag(torch.tensor(S_PLANTED, dtype=F64)) @ V.T)
    return m


def test_analyze_finds_a_planted_bottleneck():
    m = _planted()
    X = _pts(6, 40, 0)
    a = bn.analyze(m, X)
    s, df = a.summary, a.layers
    assert s["bottleneck_rank"] == 3 and s["k"] == 3 and s["k_source"] == "estimated"
    assert s["bottleneck_rank_method"].startswith("weight-gap-min")
    assert s["bottleneck_layers"] == [1, 5] and s["bottleneck_length"] == 5
    assert s["jacobian_rank"] == 3 and s["jacobian_rank_min"] == 3
    assert len(df) == 5 and list(df["layer"]) == [1, 2, 3, 4, 5]
    assert (df["near_one"] == 3).all() and (df["gap_rank"] == 3).all()
    assert (df["rep_rank_numerical"] == 3).all() and (df["skipped"] == "").all()
    assert_close(df["s_k1"], np.zeros(5), rtol=0, atol=1e-12, what="s_{k+1}")
    for i, sv in enumerate(S_PLANTED, start=1):
        assert_close(df[f"s{i}"], np.full(5, sv), rtol=1e-12, atol=0, what=f"s{i}")
    assert_close(df["frob2"], np.full(5, sum(v * v for v in S_PLANTED)), rtol=1e-12, atol=0,
                 what="||W||_F^2")
    stable = sum(v * v for v in S_PLANTED) / 1.3 ** 2
    assert_close(df["stable_rank"], np.full(5, stable), rtol=1e-12, atol=0, what="stable rank")
    # closed forms of the bound for this network
    norm2 = 5 * sum(v * v for v in S_PLANTED)
    head = 5 * sum(v * v - 1 - math.log(v * v) for v in S_PLANTED)
    A = m.end_to_end()
    lp2 = 2 * float(torch.log(torch.linalg.svdvals(A)[:3]).sum())
    assert_close(s["param_norm2"], norm2, rtol=1e-12, atol=0, what="param_norm2")
    assert_close(s["param_norm2_per_depth"], norm2 / 5, rtol=1e-12, atol=0, what="per depth")
    assert_close(s["bound_c1"], norm2 - 15, rtol=1e-12, atol=0, what="c1")
    assert_close(s["bound_lhs"], head, rtol=1e-10, atol=1e-12, what="lhs")
    for key in ("log_pdet2_min", "log_pdet2_median", "log_pdet2_max"):
        assert_close(s[key], lp2, rtol=1e-10, atol=1e-12, what=key)  # J = A at every point
    assert_close(s["bound_slack_min"], norm2 - 15 - lp2 - head, rtol=1e-10, atol=1e-12,
                 what="worst slack")
    # NTK figures are those of the public functions
    tr = bn.ntk(m, X, mode="trace")
    assert_close(s["ntk_trace_per_NL"], float(tr.sum()) / (40 * 5), rtol=1e-12, atol=0,
                 what="ntk trace / (N L)")
    assert_close(s["ntk_max_eig_per_NL"] * 40 * 5, bn.ntk_max_eig(m, X, method="dense"),
                 rtol=1e-9, atol=0, what="ntk_max_eig")
    assert_close(df["balance"][:4], bn.balancedness(m), rtol=1e-12, atol=0, what="balance")
    assert math.isnan(df["balance"].iloc[4])
    # the PCA layer is in the bottleneck and its points span 2 principal directions
    assert 1 <= s["pca_layer"] <= 5 and a.pca.shape == (40, 2)


def test_analyze_given_k_hessian_and_json(tmp_path):
    m = build(NET_CASES[3], seed=1)
    X = _pts(2, 12, 3)
    Y = _pts(3, 12, 4)
    a = bn.analyze(m, X, 1, Y=Y, lam=0.05, hessian=True, lr=0.1)
    s = a.summary
    assert s["k"] == 1 and s["k_source"] == "given"
    assert_close(s["hessian_max_eig"], torch.linalg.eigvalsh(ref.hessian_dense(m, X, Y, 0.05))
                 [-1], rtol=1e-8, atol=1e-10, what="hessian in analyze")
    assert s["two_over_lr"] == pytest.approx(20.0, rel=1e-15)
    with torch.no_grad():
        fit = float((m(X) - Y).pow(2).sum()) / 12
    assert_close(s["fit"], fit, rtol=1e-12, atol=0, what="fit")
    assert_close(s["objective"], fit + 0.05 * float(bn.param_norm2(m).detach()), rtol=1e-12, atol=0,
                 what="objective")
    d = a.to_dict()
    text = json.dumps(d, allow_nan=False)  # JSON-safe: non-finite numbers became null
    back = json.loads(text)
    assert back["summary"]["depth"] == 4 and len(back["layers"]) == 4
    assert len(back["weight_spectra"]) == 4 and back["layers"][3]["balance"] is None
    fig = a.plot(tmp_path / "fig.png")
    assert len(fig.axes) >= 3 and (tmp_path / "fig.png").stat().st_size > 1000


def test_analyze_random_net_names_fallback_and_skips_thin_layers():
    m = build(NET_CASES[4], seed=0)  # d_out = 1: the last layer is 1 x 4
    a = bn.analyze(m, _pts(5, 16, 0), ntk=False)
    last = a.layers.iloc[-1]
    assert last["skipped"] == "min(n_out, n_in) < 2" and math.isnan(last["gap_rank"])
    assert "ntk_trace_per_NL" not in a.summary
    assert a.summary["bottleneck_rank_method"].split(":")[0] in ("weight-gap-mode",
                                                                 "jacobian-rank")
    assert a.summary["bottleneck_rank"] <= 1  # capped at the narrowest width
    json.dumps(a.to_dict(), allow_nan=False)


# --- bad inputs ------------------------------------------------------------------------

@pytest.mark.parametrize("fn", ["representations", "jacobian", "ntk", "ntk_max_eig",
                                "bottleneck_bound", "analyze", "hessian_max_eig"])
def test_bad_inputs_raise_one_clear_error(fn):
    m = build(NET_CASES[1], seed=0)  # d_in = 3, sizes [3, 5, 2]

    def call(X, **kw):
        if fn == "bottleneck_bound":
            return bn.bottleneck_bound(m, X, kw.get("k", 1))
        if fn == "analyze":
            return bn.analyze(m, X, kw.get("k"))
        if fn == "hessian_max_eig":
            return bn.hessian_max_eig(m, X, torch.zeros(len(X), 2, dtype=F64), 0.1)
        return getattr(bn, fn)(m, X)

    with pytest.raises(bn.DataError, match=r"expects d_in = 3"):
        call(torch.zeros(4, 2, dtype=F64))
    with pytest.raises(bn.DataError, match="non-finite.*row 1"):
        call(torch.tensor([[0.0, 1, 2], [float("nan"), 0, 0]], dtype=F64))
    with pytest.raises(bn.DataError, match="non-finite"):
        call(torch.tensor([[0.0, float("inf"), 2]], dtype=F64))
    with pytest.raises(bn.DataError, match="empty"):
        call(torch.zeros(0, 3, dtype=F64))
    with pytest.raises(bn.DataError, match=r"shape \[N, d_in\]"):
        call(torch.zeros(3, dtype=F64))
    if fn in ("bottleneck_bound", "analyze"):
        with pytest.raises(bn.ConfigError, match="narrowest layer.*the output has width 2"):
            call(torch.zeros(4, 3, dtype=F64), k=3)
        with pytest.raises(bn.ConfigError, match="non-negative integer"):
            call(torch.zeros(4, 3, dtype=F64), k=-1)


def test_non_chains_are_analyzed_but_theory_needs_a_chain():
    """Any model is analyzed (issue 13); the bound and balancedness, which need a positively
    homogeneous chain, name the module that breaks it, and analyze says why its theory
    columns are null."""
    seq = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64)
    X = torch.randn(6, 3, dtype=F64)
    for call in (lambda: bn.bottleneck_bound(seq, X, 1), lambda: bn.balancedness(seq)):
        with pytest.raises(bn.ConfigError, match=r"unsupported module '1' \(Tanh\)"):
            call()
    a = bn.analyze(seq, X)
    assert "unsupported module '1' (Tanh)" in a.summary["theory"]
    assert a.layers["balance"].isna().all() and a.summary["bound_slack_min"] is None
    assert len(bn.representations(seq, X)) == 2 and len(bn.weight_spectra(seq)) == 2
    with pytest.raises(bn.ConfigError, match="must start with nn.Linear"):
        bn.bottleneck_bound(nn.Sequential(nn.ReLU(), nn.Linear(3, 2)).to(F64), X, 1)


def test_other_bad_arguments():
    m = build(NET_CASES[1], seed=0)
    X = torch.zeros(4, 3, dtype=F64)
    with pytest.raises(bn.ConfigError, match="mode"):
        bn.ntk(m, X, mode="eigen")
    with pytest.raises(bn.ConfigError, match="X2 must be None"):
        bn.ntk(m, X, X, mode="trace")
    with pytest.raises(bn.DataError, match="X2 has 2 columns"):
        bn.ntk(m, X, torch.zeros(3, 2, dtype=F64))
    with pytest.raises(bn.ConfigError, match="needs the targets Y and the penalty lam"):
        bn.analyze(m, X, hessian=True)
    with pytest.raises(bn.DataError, match=r"Y must have shape \[N, d_out\] = \[4, 2\]"):
        bn.hessian_max_eig(m, X, torch.zeros(4, 3, dtype=F64), 0.1)
    with pytest.raises(bn.ConfigError, match="lam must be"):
        bn.hessian_max_eig(m, X, torch.zeros(4, 2, dtype=F64), -1.0)
    with pytest.raises(bn.ConfigError, match="slope"):
        bn.bottleneck_bound(nn.Sequential(nn.Linear(3, 3), nn.LeakyReLU(2.0),
                                          nn.Linear(3, 2)).to(F64), X, 1)


# --- CLI -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = bn.RunConfig(task=bn.TaskSpec("composite", (("n_test", 16), ("n_train", 32))),
                       model=bn.ModelSpec("mlp", 8, 3), stages=bn.default_recipe(steps=30),
                       log_every=10, checkpoint_every=30, device="cpu")
    return bn.run(cfg, tmp_path_factory.mktemp("store"), progress=False).path


def test_cli_analyze_json_table_and_plot(tiny_run, tmp_path, capsys):
    assert main(["analyze", str(tiny_run), "--json", "--points", "16", "--k", "2"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["summary"]["n_points"] == 16 and d["summary"]["k"] == 2
    assert d["summary"]["task_bn_rank"] == 2 and len(d["layers"]) == 3
    png = tmp_path / "a.png"
    assert main(["analyze", str(tiny_run), "--hessian", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "bottleneck_rank_method" in text and "hessian_max_eig" in text and png.exists()


@pytest.mark.parametrize("extra, msg", [
    (["--k", "99"], "narrowest layer"),
    (["--points", "0"], "--points must be >= 1"),
    (["--points", "1000"], "exceeds"),
    (["--plot", "fig.xyz"], "unknown figure format"),
    (["--plot", "/nonexistent-dir/fig.png"], "does not exist or is not writable"),
])
def test_cli_analyze_bad_input_exits_2(tiny_run, capsys, extra, msg):
    assert main(["analyze", str(tiny_run), *extra]) == 2
    e = capsys.readouterr().err
    assert msg in e and len(e.strip().splitlines()) == 1


def test_cli_analyze_diverged_run_exits_2(tmp_path, capsys):
    cfg = bn.RunConfig(task=bn.TaskSpec("composite", (("n_test", 16), ("n_train", 32))),
                       model=bn.ModelSpec("mlp", 8, 4), stages=(bn.Stage("gd", 1e4, 0.0, 50),),
                       log_every=10, device="cpu")
    r = bn.run(cfg, tmp_path, progress=False)
    assert r.status == "diverged"
    assert main(["analyze", str(r.path)]) == 2
    e = capsys.readouterr().err
    assert "diverged run?" in e and len(e.strip().splitlines()) == 1


def test_analyze_rejects_overflowing_forward_pass():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.fill_(3e38)
    with pytest.raises(bn.DataError, match="overflows torch.float32 at layer 1"):
        bn.analyze(net, torch.ones(4, 2))


def test_cli_analyze_not_a_run_exits_2(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def _diag_chain(spectra: list[list[float]], width: int = 6) -> torch.nn.Sequential:
    """A linear chain whose layer l has singular values spectra[l] (diagonal weights)."""
    layers = []
    for sv in spectra:
        lin = torch.nn.Linear(width, width, bias=False, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.diag(torch.tensor(sv + [0.0] * (width - len(sv)),
                                                     dtype=torch.float64)))
        layers += [lin, torch.nn.Identity()]
    return torch.nn.Sequential(*layers[:-1])


def test_bottleneck_rank_is_the_narrowest_consistent_point_not_the_mode():
    two, three, one = [1.0, 0.9, 0.01], [1.0, 0.9, 0.8, 0.01], [1.0, 0.1, 0.05]
    # interior layers 2..7: a 2-d stretch of two layers, a lone rank-1 layer (noise, ignored),
    # then three 3-d layers: the mode is 3, the bottleneck is 2.
    net = _diag_chain([three, two, two, one, three, three, three, three])
    X = torch.randn(30, 6, dtype=torch.float64)
    s = bn.analyze(net, X, ntk=False).summary
    assert s["bottleneck_rank"] == 2, s["bottleneck_rank_method"]
    assert s["bottleneck_rank_method"].startswith("weight-gap-min")
    # without two consecutive agreeing layers the estimate falls back to the mode
    net = _diag_chain([three, two, three, one, three, two, three, three])
    s = bn.analyze(net, X, ntk=False).summary
    assert s["bottleneck_rank"] == 3 and s["bottleneck_rank_method"].startswith("weight-gap-mode")


# --- the analyze table: 100 columns by default, everything on demand ----------------------

def test_default_table_fits_100_columns_and_all_shows_everything():
    from rich.console import Console
    from rich.measure import Measurement

    from bnstruct.cli import analysis_table
    from bnstruct.diagnostics import LAYER_COLUMNS

    m = bn.MLP(20, [200] * 11, 12, 20, seed=0)  # wide layers: long shape strings
    a = bn.analyze(m, _pts(20, 64, 0), 4, ntk=False)  # k = 4: s1..s4 and s5 all shown
    console = Console(width=100, record=True)
    table = analysis_table(a, title="layers")
    width = Measurement.get(console, console.options, table).maximum
    assert width <= 100, f"default table needs {width} columns"
    console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    for head in ("layer", "shape", "s1", "s4", "s5=s_k+1", "near1", "energy", "in_BN"):
        assert head in text
    assert "200x200" in text and "…" not in text  # nothing truncated
    wide = Console(width=1000, record=True)
    wide.print(analysis_table(a, all_columns=True))
    header = wide.export_text().splitlines()[1]
    assert all(c in header for c in LAYER_COLUMNS)


def _reject_nan(name: str) -> float:
    raise ValueError(f"non-strict JSON constant {name}")


def test_cli_analyze_csv_json_all(tiny_run, capsys):
    import io

    import pandas as pd

    assert main(["analyze", str(tiny_run), "--csv", "--points", "16"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    from bnstruct.diagnostics import LAYER_COLUMNS

    assert list(df.columns) == LAYER_COLUMNS and len(df) == 3
    assert main(["analyze", str(tiny_run), "--json", "--points", "16"]) == 0
    d = json.loads(capsys.readouterr().out, parse_constant=_reject_nan)
    assert d["layers"][2]["balance"] is None and d["summary"]["implementation"] == "structured"
    assert main(["analyze", str(tiny_run), "--all", "--points", "16"]) == 0
    assert "w_erank_participation" in capsys.readouterr().out
    assert main(["analyze", str(tiny_run), "--points", "16"]) == 0
    assert "w_erank_participation" not in capsys.readouterr().out
    assert main(["analyze", str(tiny_run), "--json", "--csv"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_cli_bench_analyze_json(capsys):
    assert main(["bench", "analyze", "--depth", "3", "--width", "6", "--n", "12",
                 "--d-out", "3", "--rounds", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out, parse_constant=_reject_nan)
    assert [r["variant"] for r in d["rows"]] == ["public functions one by one", "analyze"]
    assert d["ntk_max_eig_rel_diff"] <= 1e-12 and d["bound_slack_min_diff"] <= 1e-9
    assert main(["bench", "analyze", "--n", "0"]) == 2


def test_analyze_rep_energy_rank_against_numpy():
    """``rep_energy_rank``: the fewest principal directions of the centered representation
    holding all but ENERGY_TOL of its energy, from a NumPy forward pass and SVD."""
    from bnstruct.conventions import ENERGY_TOL

    torch.manual_seed(3)
    m = bn.MLP(4, 12, 5, 3).double()
    X = _pts(4, 60, 2)
    df = bn.analyze(m, X, 2, ntk=False).layers
    a = X.numpy()
    lins = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
    for l, lin in enumerate(lins, start=1):
        a = a @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
        if l < len(lins):
            a = np.maximum(a, 0.0)
        e = np.linalg.svd(a - a.mean(0), compute_uv=False) ** 2
        outside = e.sum() - np.cumsum(e)
        want = 1 + int(np.argmax(outside <= ENERGY_TOL * e.sum()))
        assert df["rep_energy_rank"].iloc[l - 1] == want, l
    assert df["rep_energy_rank"].nunique() > 1  # not a constant column
