"""One parser, one cached evaluation, named implementations, the bottleneck-rank estimate."""

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cases import NET_CASES, build
from torch import nn

import bnstruct as bn
from bnstruct.conventions import bottleneck_rank
from bnstruct.diagnostics import Evaluation
from bnstruct.diagnostics import _chain_evaluation as evmod
from bnstruct.diagnostics import reference as ref
from bnstruct.testing import assert_close

F64 = torch.float64
SRC = Path(bn.__file__).parent


def _pts(d: int, n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --- one parser: nested containers, Dropout, Identity -------------------------------------

def _flat_and_nested(bias: bool = True) -> tuple[nn.Sequential, nn.Sequential]:
    """The same function twice: a flat chain and a nested one with Dropout and Identity."""
    flat = nn.Sequential(nn.Linear(4, 6, bias=bias), nn.ReLU(), nn.Linear(6, 5, bias=bias),
                         nn.LeakyReLU(0.1), nn.Linear(5, 5, bias=bias), nn.ReLU(),
                         nn.Linear(5, 3, bias=bias)).to(F64)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in flat.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.8)
    f = list(flat)
    nested = nn.Sequential(
        nn.Sequential(f[0], nn.Dropout(0.5), f[1]),
        nn.Identity(),
        nn.Sequential(nn.Sequential(f[2], f[3]), nn.Dropout(0.3)),
        nn.Sequential(f[4], nn.Identity(), f[5], nn.AlphaDropout(0.2)),
        f[6])
    return flat, nested


@pytest.mark.parametrize("train_mode", [False, True])
def test_nested_sequential_dropout_identity_match_the_flat_chain(train_mode):
    flat, nested = _flat_and_nested()
    nested.train(train_mode)  # Dropout is read with eval-mode semantics either way
    X = _pts(4, 30, 0)
    a, b = bn.analyze(flat, X, ntk=True), bn.analyze(nested, X, ntk=True)
    num = [c for c in a.layers.columns if c != "name"]
    pd_eq = a.layers[num].equals(b.layers[num])
    assert pd_eq, (a.layers[num], b.layers[num])
    assert list(b.layers["name"]) == ["0.0", "2.0.0", "3.0", "4"]
    for key, v in a.summary.items():
        assert b.summary[key] == v or (isinstance(v, float) and math.isnan(v)
                                       and math.isnan(b.summary[key])), key
    assert_close(bn.balancedness(nested), bn.balancedness(flat), rtol=0, atol=0,
                 what="balancedness nested vs flat")
    assert nested.training == train_mode  # the user's mode is left alone
    # rebalancing acts on the shared layers: the same function, the same balanced weights
    f0 = flat(X).detach()
    bn.rebalance(nested)
    assert float(bn.balancedness(flat).max()) <= 1e-8
    with torch.no_grad():
        assert_close(flat(X), f0, rtol=0, atol=1e-12, what="f after rebalancing nested")


def test_feedforward_inside_a_sequential_is_read_as_its_chain():
    mlp = build(NET_CASES[3], seed=2)
    seq = nn.Sequential(nn.Identity(), mlp, nn.Dropout(0.1))
    X = _pts(mlp.d_in, 9, 1)
    assert_close(bn.jacobian(seq, X), bn.jacobian(mlp, X), rtol=0, atol=0, what="J")
    assert [w.shape for w in bn.weight_spectra(seq)] == [w.shape for w in bn.weight_spectra(mlp)]
    assert bn.models.linear_layers(seq) == list(mlp.layers)


@pytest.mark.parametrize("net, msg", [
    (nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.Tanh()), nn.Linear(4, 2)),
     r"unsupported module '0.1' \(Tanh\)"),
    (nn.Sequential(nn.Dropout(), nn.ReLU(), nn.Linear(3, 2)), "must start with nn.Linear"),
    (nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)), "expects 5 inputs"),
])
def test_parser_errors_name_the_module(net, msg):
    X = torch.zeros(2, 3, dtype=F64)
    for call in (lambda: bn.bottleneck_bound(net.double(), X, 0), lambda: bn.balancedness(net),
                 lambda: bn.rebalance(net)):
        with pytest.raises(bn.ConfigError, match=msg):
            call()


def test_a_layer_used_twice_is_refused():
    lin = nn.Linear(3, 3)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    for call in (lambda: bn.balancedness(net), lambda: bn.rebalance(net)):
        with pytest.raises(bn.ConfigError, match="used twice"):
            call()


# --- implementations: structured vs autodiff ------------------------------------------------

CHAINS = [lambda: build(NET_CASES[3], seed=1), lambda: build(NET_CASES[2], seed=4),
          lambda: bn.DeepLinear(3, [4, 5], 3, 2, seed=1, dtype=F64),
          lambda: _flat_and_nested(bias=False)[1]]


@pytest.mark.parametrize("make", CHAINS, ids=["mlp", "mlp-nobias", "deeplinear", "nested"])
def test_structured_and_autodiff_agree_to_1e10(make):
    m = make()
    d_in = bn.models.linear_layers(m)[0].in_features
    X, X2 = _pts(d_in, 7, 0), _pts(d_in, 3, 1)
    s = Evaluation(m, X, implementation="structured")
    a = Evaluation(m, X, implementation="autodiff")
    assert (s.implementation, a.implementation) == ("structured", "autodiff")
    assert Evaluation(m, X).implementation == "structured"  # auto picks the fast path
    pairs = [("jacobian", s.jacobian, a.jacobian)]
    pairs += [(f"ntk {mode}", s.ntk(mode), a.ntk(mode)) for mode in ("full", "trace", "diag")]
    pairs.append(("ntk(X, X2)", s.ntk("full", X2), a.ntk("full", X2)))
    v = torch.randn(7, s.d_out, generator=torch.Generator().manual_seed(2), dtype=F64)
    pairs.append(("Theta v", s.ntk_matvec()(v), a.ntk_matvec()(v)))
    for what, x, y in pairs:
        assert_close(x, y, rtol=1e-10, atol=1e-10 * float(y.abs().max()), what=what)
    for method in ("lanczos", "dense"):
        assert_close(s.ntk_max_eig(method), a.ntk_max_eig(method), rtol=1e-10, atol=0,
                     what=f"ntk_max_eig {method}")
    # the public functions take the same switch
    assert_close(bn.ntk(m, X, mode="trace", implementation="autodiff"), s.ntk("trace"),
                 rtol=1e-10, atol=0, what="bn.ntk autodiff")
    aa = bn.analyze(m, X, implementation="autodiff")
    ss = bn.analyze(m, X)
    assert (aa.summary["implementation"], ss.summary["implementation"]) == ("autodiff",
                                                                            "structured")
    for key in ("ntk_trace_per_NL", "ntk_max_eig", "bound_slack_min", "log_pdet2_median"):
        assert_close(aa.summary[key], ss.summary[key], rtol=1e-10, atol=1e-12, what=key)


def test_implementation_choices_are_checked():
    m = build(NET_CASES[1], seed=0)
    X = _pts(3, 4, 0)
    with pytest.raises(bn.ConfigError, match="unknown implementation 'fast'"):
        bn.ntk(m, X, implementation="fast")
    wrapped = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64)
    with pytest.raises(bn.ConfigError, match="structured.*needs a chain.*Tanh"):
        bn.jacobian(wrapped, X, implementation="structured")
    assert Evaluation(wrapped, X).implementation == "autodiff"
    assert_close(bn.jacobian(wrapped, X), ref.jacobian_reference(wrapped, X, F64), rtol=1e-12,
                 atol=1e-14, what="autodiff jacobian of a non-chain")


def test_autodiff_runs_the_model_in_eval_mode_and_restores_it():
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 2)).to(F64)
    net.train()
    X = _pts(3, 5, 0)
    J1, J2 = bn.jacobian(net, X), bn.jacobian(net, X)
    assert_close(J1, J2, rtol=0, atol=0, what="deterministic (Dropout off)")
    net.eval()
    assert_close(J1, ref.jacobian_reference(net, X, F64), rtol=1e-12, atol=1e-14,
                 what="eval-mode Jacobian")
    net.train()
    bn.ntk(net, X, mode="trace")
    assert net.training and net[2].training


# --- one evaluation: everything computed once -------------------------------------------

def test_analyze_runs_one_forward_pass_and_one_backward_sweep(monkeypatch):
    calls = {"forward": 0, "backward": 0}
    fwd, bwd = evmod.forward, evmod.backward_factors

    def count_fwd(*a, **k):
        calls["forward"] += 1
        return fwd(*a, **k)

    def count_bwd(*a, **k):
        calls["backward"] += 1
        return bwd(*a, **k)

    monkeypatch.setattr(evmod, "forward", count_fwd)
    monkeypatch.setattr(evmod, "backward_factors", count_bwd)
    m = build(NET_CASES[3], seed=0)
    X = _pts(2, 200, 0)  # N d_out = 600 > NTK_DENSE_MAX: Lanczos, no full kernel
    bn.analyze(m, X, 1, ntk=True)
    assert calls == {"forward": 1, "backward": 1}
    ev = Evaluation(m, X)
    assert ev.jacobian is ev.jacobian and ev.weight_spectra is ev.weight_spectra
    assert ev.ntk("trace") is ev.ntk("trace") and ev.rep_spectra is ev.rep_spectra


def test_public_functions_are_views_of_the_evaluation():
    m = build(NET_CASES[3], seed=5)
    X = _pts(2, 11, 0)
    ev = Evaluation(m, X)
    assert_close(bn.jacobian(m, X), ev.jacobian, rtol=0, atol=0, what="jacobian")
    assert_close(bn.ntk(m, X, mode="diag"), ev.ntk("diag"), rtol=0, atol=0, what="diag")
    assert bn.ntk_max_eig(m, X) == ev.ntk_max_eig()
    assert bn.bottleneck_bound(m, X, 1).equals(ev.bound(1))
    for a, b in zip(bn.representations(m, X), ev.representations(), strict=True):
        assert_close(a, b, rtol=0, atol=0, what="representations")


# --- the bottleneck-rank estimate -----------------------------------------------------------

TWO, THREE, ONE = [1.0, 0.9, 0.01], [1.0, 0.9, 0.8, 0.01], [1.0, 0.1, 0.05]
FLAT = [1.0, 0.9, 0.8, 0.7]  # no clear gap


@pytest.mark.parametrize("spectra, jrank, k, method", [
    # two consecutive interior layers agree on 2: the narrowest consistent point
    ([THREE, TWO, TWO, ONE, THREE, THREE, THREE, THREE], None, 2, "weight-gap-min"),
    # the first and last layers are not interior: their rank-1 pair does not count
    ([ONE, ONE, THREE, THREE, ONE], None, 3, "weight-gap-min"),
    # no two consecutive layers agree: the mode over clear gaps (ties: the smallest)
    ([THREE, TWO, THREE, ONE, THREE, TWO, THREE, THREE], None, 3, "weight-gap-mode"),
    ([FLAT, TWO, THREE, FLAT], None, 2, "weight-gap-mode"),
    # no clear gap anywhere: the Jacobian rank
    ([FLAT, FLAT, FLAT], 4, 4, "jacobian-rank"),
    # skipped layers (one value, zero weights) never count
    ([[2.0], [0.0, 0.0, 0.0], FLAT, [3.0]], 1, 1, "jacobian-rank"),
])
def test_bottleneck_rank_every_branch(spectra, jrank, k, method):
    got_k, got_method = bottleneck_rank([np.array(s) for s in spectra],
                                                 jacobian_rank=jrank)
    assert (got_k, got_method.split(":")[0]) == (k, method)
    assert got_method.split(":")[0] in bn.conventions.BOTTLENECK_RANK_METHODS


def test_bottleneck_rank_caps_and_errors():
    # three interior layers agree on 3 but a layer has only 2 values: Rank_BN <= min(sizes)
    narrow = [1.0, 0.01]
    k, method = bottleneck_rank([THREE, THREE, THREE, narrow])
    assert (k, method.split(":")[0]) == (2, "weight-gap-min")
    with pytest.raises(bn.DataError, match="pass jacobian_rank"):
        bottleneck_rank([FLAT, FLAT, FLAT])
    with pytest.raises(bn.ConfigError, match="at least one"):
        bottleneck_rank([])
    with pytest.raises(bn.DataError, match="non-negative"):
        bottleneck_rank([[1.0, -1.0]])
    # order free, tensors accepted
    k, _ = bottleneck_rank([torch.tensor(s[::-1]) for s in (THREE, TWO, TWO, THREE)])
    assert k == 2


def test_analyze_uses_the_estimate():
    m = build(NET_CASES[3], seed=2)
    X = _pts(2, 25, 0)
    a = bn.analyze(m, X, ntk=False)
    k, method = bottleneck_rank(a.weight_spectra,
                                         jacobian_rank=a.summary["jacobian_rank"])
    assert (a.summary["bottleneck_rank"], a.summary["bottleneck_rank_method"]) == (k, method)


# --- conventions of the evaluation --------------------------------------------------------

def test_float32_model_is_measured_in_float64_with_model_eps_ranks():
    m32 = bn.MLP(3, 6, 4, 2, seed=0)
    m64 = bn.MLP(3, 6, 4, 2, seed=0, dtype=F64)
    m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})  # same weights
    X = _pts(3, 40, 0)
    a32, a64 = bn.analyze(m32, X, ntk=False), bn.analyze(m64, X, ntk=False)
    for c in ("s1", "rep_erank_entropy", "balance", "frob2"):
        assert_close(a32.layers[c].fillna(-1), a64.layers[c].fillna(-1), rtol=1e-12, atol=0,
                     what=c)
    assert "float32" in a32.summary["conventions"]["rep_rank_numerical"]
    assert a32.summary["conventions"]["compute_dtype"] == "float64"
    # the float32 rank threshold is looser: never more numerical rank than in float64
    assert (a32.layers["rep_rank_numerical"] <= a64.layers["rep_rank_numerical"]).all()


def test_analyze_without_ntk_is_deterministic():
    m = build(NET_CASES[4], seed=1)
    X = _pts(5, 20, 0)
    a, b = bn.analyze(m, X, ntk=False), bn.analyze(m, X, ntk=False)
    assert a.layers.equals(b.layers)
    assert json.dumps(a.to_dict(), allow_nan=False) == json.dumps(b.to_dict(), allow_nan=False)


# --- the Lanczos solver -------------------------------------------------------------------

def _diag_op(vals: torch.Tensor):
    Q = torch.linalg.qr(torch.randn(len(vals), len(vals),
                                    generator=torch.Generator().manual_seed(0),
                                    dtype=F64))[0]
    M = Q @ torch.diag(vals) @ Q.T
    return (lambda v: M @ v), M


@pytest.mark.parametrize("vals", [
    torch.linspace(0, 1, 300, dtype=F64),  # no gap at the top
    torch.cat([torch.tensor([5.0, 5.0 - 1e-7], dtype=F64), torch.rand(
        200, generator=torch.Generator().manual_seed(1), dtype=F64)]),  # near-degenerate
    torch.cat([torch.tensor([-10.0], dtype=F64), torch.linspace(-1, 2, 100, dtype=F64)]),
])
def test_lanczos_top_eigenvalue(vals):
    from bnstruct.diagnostics._lanczos import top_eig

    mv, M = _diag_op(vals)
    expected = float(torch.linalg.eigvalsh(M)[-1])
    got = top_eig(mv, len(vals), dtype=F64, tol=1e-10)
    assert_close(got, expected, rtol=1e-9, atol=0, what="Lanczos top eigenvalue")
    # the ARPACK fallback when plain Lanczos gets too few steps
    got = top_eig(mv, len(vals), dtype=F64, tol=1e-10, maxiter=3)
    assert_close(got, expected, rtol=1e-9, atol=0, what="ARPACK fallback")


# --- layering: production code never imports the tests' references --------------------------

def test_production_code_does_not_import_the_references():
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "reference.py" or path.name == "bench.py":
            continue  # bench times the references as its baselines
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.endswith("reference") or any(
                        a.name == "reference" for a in node.names)):
                offenders.append(str(path.relative_to(SRC)))
    assert offenders == []
    code = ("import torch, sys, bnstruct as bn\n"
            "from torch import nn\n"
            "X = torch.randn(6, 3, dtype=torch.float64)\n"
            "m = bn.MLP(3, 4, 3, 2, seed=0, dtype=torch.float64)\n"
            "g = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()\n"
            "bn.analyze(m, X, hessian=True, Y=torch.zeros(6, 2, dtype=torch.float64), lam=0.1)\n"
            "bn.ntk(g, X); bn.ntk_max_eig(g, X, method='lanczos'); bn.jacobian(g, X)\n"
            "print('bnstruct.diagnostics.reference' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_svdvals_list_equals_one_call_per_matrix():
    """Same-shape matrices go through one batched call: the values are bit-identical to one
    call per matrix (the same LAPACK routine), order kept across mixed shapes."""
    from bnstruct.diagnostics._evaluation import svdvals, svdvals_list

    g = torch.Generator().manual_seed(3)
    mats = [torch.randn(7, 4, generator=g, dtype=torch.float64),
            torch.randn(3, 5, generator=g, dtype=torch.float64),
            torch.relu(torch.randn(7, 4, generator=g, dtype=torch.float64)),
            torch.zeros(7, 4, dtype=torch.float64),
            torch.randn(3, 5, generator=g, dtype=torch.float64)]
    got = svdvals_list(mats)
    assert len(got) == len(mats)
    for A, s in zip(mats, got, strict=True):
        assert torch.equal(s, svdvals(A))
        ref = torch.from_numpy(np.linalg.svd(A.numpy(), compute_uv=False))
        torch.testing.assert_close(s, ref, rtol=1e-12, atol=1e-14)


def test_chain_ntk_matvec_leaves_the_forward_pass_intact():
    """The NTK matvec masks its own fresh tensors in place: the stored forward pass and the
    vector are not modified, and repeated products agree with the dense float64 kernel."""
    from bnstruct.diagnostics._evaluation import Evaluation

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(),
                        nn.Linear(4, 2), nn.ReLU()).double()
    X = torch.randn(6, 3, dtype=torch.float64)
    ev = Evaluation(net, X)
    fw = ev.forward
    before = [t.clone() for t in (*fw.a, *[d for d in fw.d if d is not None], fw.out)]
    mv = ev.ntk_matvec()
    K = ev.ntk("full").permute(0, 2, 1, 3).reshape(12, 12)
    v = torch.randn(6, 2, dtype=torch.float64)
    v0 = v.clone()
    for _ in range(2):
        torch.testing.assert_close(mv(v).reshape(-1), K @ v.reshape(-1), rtol=1e-10,
                                   atol=1e-12)
    assert torch.equal(v, v0)
    after = [*fw.a, *[d for d in fw.d if d is not None], fw.out]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
