"""Any PyTorch model (issue 13): a registry of model kinds, each measured against independent
``torch.func`` references in float64 (:mod:`bnstruct.diagnostics.reference`), plus bad input.
"""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnstruct as bn
from bnstruct.diagnostics import Evaluation
from bnstruct.diagnostics import reference as ref
from bnstruct.testing import assert_close

F64 = torch.float64


def _init(m: nn.Module, seed: int) -> nn.Module:
    """Seeded parameters and BatchNorm statistics (non-trivial), float64."""
    g = torch.Generator().manual_seed(seed)
    m = m.to(F64)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64)
                    / math.sqrt(max(1, p[0].numel() if p.dim() > 1 else 4)))
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d):
                mod.running_mean.copy_(0.3 * torch.randn(mod.num_features, generator=g,
                                                         dtype=F64))
                mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=g,
                                                       dtype=F64))
    return m


class CustomForward(nn.Module):
    """Own forward with functional activations and a skip connection."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.a(x))
        h = h + F.softplus(self.b(h))
        return self.head(h)


class ResBlock(nn.Module):
    def __init__(self, d: int, act: nn.Module) -> None:
        super().__init__()
        self.l1, self.act, self.l2 = nn.Linear(d, d), act, nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.l2(self.act(self.l1(x)))


class Encoder(nn.Module):
    """Nested containers: a ModuleList of blocks inside a Sequential inside a module."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(4, 5), nn.ReLU())
        self.blocks = nn.ModuleList([ResBlock(5, nn.ReLU()), ResBlock(5, nn.SiLU())])
        self.out = nn.Sequential(nn.Sequential(nn.Linear(5, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for b in self.blocks:
            h = b(h)
        return self.out(h)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.act1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.act2 = nn.GELU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.act1(self.conv1(x)))
        h = self.gap(self.act2(self.conv2(h)))
        return self.fc(h.flatten(1))


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.head = nn.Linear(6, 2)
        self.aux = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.aux(h), self.head(h)


class Select(nn.Module):
    """The reference's view of a tuple model: plain indexing, written independently."""

    def __init__(self, m: nn.Module, i: int) -> None:
        super().__init__()
        self.m, self.i = m, i

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)[self.i]


# name -> (build, input shape of one point, output selector)
KINDS = {
    "custom-forward": (lambda: CustomForward(), (4,), None),
    "nested-containers": (lambda: Encoder(), (4,), None),
    "residual-mlp": (lambda: nn.Sequential(nn.Linear(4, 6), ResBlock(6, nn.ReLU()),
                                           ResBlock(6, nn.ReLU()), nn.Linear(6, 2)), (4,), None),
    "cnn-conv2d-pool": (lambda: SmallCNN(), (1, 4, 4), None),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.ELU(),
                                     nn.Conv1d(3, 2, 2, stride=2), nn.Flatten(),
                                     nn.Linear(6, 2)), (2, 6), None),
    "gelu-tanh": (lambda: nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.Linear(5, 5),
                                        nn.Tanh(), nn.Linear(5, 3)), (4,), None),
    "dropout-batchnorm": (lambda: nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(),
                                                nn.Dropout(0.5), nn.Linear(6, 2)), (4,), None),
    "bias-free": (lambda: nn.Sequential(nn.Linear(4, 5, bias=False), nn.Sigmoid(),
                                        nn.Linear(5, 2, bias=False)), (4,), None),
    "tuple-output": (lambda: TupleOut(), (4,), 1),
    "layernorm-silu": (lambda: nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.SiLU(),
                                             nn.Linear(6, 2)), (4,), None),
}


def _make(kind: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor, object, nn.Module]:
    build, shape, out = KINDS[kind]
    m = _init(build(), seed)
    X = torch.randn(5, *shape, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    refm = Select(m, out) if out is not None else m  # what the references differentiate
    return m, X, out, refm


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def _tol(t: torch.Tensor) -> float:
    return 1e-12 * float(t.abs().max()) + 1e-300


def test_general_models_match_torch_func_references(kind):
    m, X, out, refm = _make(kind)
    m.train()  # measurements run in eval mode; the references get eval mode explicitly
    ev = Evaluation(m, X, output=out)
    assert ev.implementation == "autodiff" and not ev.is_chain
    refm.eval()
    Xf = X
    J = ref.jacobian_reference(refm, Xf, F64)
    J = J.reshape(J.shape[0], J.shape[1], -1)
    assert_close(ev.jacobian, J, rtol=1e-10, atol=1e-12, what=f"{kind}: jacobian")
    for mode in ("full", "trace", "diag"):
        K = ref.ntk_reference(refm, Xf, mode=mode)
        assert_close(ev.ntk(mode), K, rtol=1e-10, atol=_tol(K), what=f"{kind}: ntk {mode}")
    Kf = ref.ntk_reference(refm, Xf)
    n = Kf.shape[0] * Kf.shape[2]
    top = torch.linalg.eigvalsh(Kf.permute(0, 2, 1, 3).reshape(n, n))[-1]
    assert_close(ev.ntk_max_eig("lanczos"), top, rtol=1e-9, atol=0, what=f"{kind}: ntk top")
    Y = torch.randn(X.shape[0], ev.d_out, generator=torch.Generator().manual_seed(7), dtype=F64)
    H = ref.hessian_dense(refm, Xf, Y, 0.05)
    assert_close(ev.hessian_max_eig(Y, 0.05, "lanczos"), torch.linalg.eigvalsh(H)[-1],
                 rtol=1e-8, atol=1e-10, what=f"{kind}: hessian top")
    # weight spectra: every Linear / Conv, kernels as out x (in * k), numpy SVD
    mats = [mod.weight.detach().reshape(mod.weight.shape[0], -1).numpy()
            for mod in m.modules() if isinstance(mod, nn.Linear | nn.Conv1d | nn.Conv2d)]
    spectra = bn.weight_spectra(m)
    assert len(spectra) == len(mats)
    for s, W in zip(spectra, mats, strict=True):
        assert_close(s, np.linalg.svd(W, compute_uv=False), rtol=1e-12, atol=1e-14,
                     what=f"{kind}: weight spectrum")
    m.train()
    assert m.training and all(x.training for x in m.modules())  # the user's mode restored


def test_general_representations_are_the_module_outputs(kind):
    m, X, out, refm = _make(kind)
    m.eval()
    names = bn.diagnostics.Evaluation(m, X, output=out).rep_names
    assert names[-1] == "output" and len(names) >= 2
    got = bn.representations(m, X, output=out)
    # independent: plain forward with hooks on the same named modules
    mods = dict(m.named_modules())
    seen: dict[str, list[torch.Tensor]] = {}
    hs = [mods[n.split("#")[0]].register_forward_hook(
        lambda _m, _a, o, n=n.split("#")[0]: seen.setdefault(n, []).append(o.detach()))
        for n in dict.fromkeys(x.split("#")[0] for x in names[:-1])]
    with torch.no_grad():
        y = refm(X)
    for h in hs:
        h.remove()
    calls: dict[str, int] = {}
    for n, A in zip(names[:-1], got[:-1], strict=True):
        base = n.split("#")[0]
        calls[base] = calls.get(base, 0) + 1
        assert_close(A, seen[base][calls[base] - 1], rtol=1e-13, atol=1e-13, what=n)
    assert_close(got[-1], y.reshape(len(X), -1), rtol=1e-13, atol=1e-13, what="output")


def test_analyze_any_model_names_its_methods_and_nulls_theory(kind):
    m, X, out, _ = _make(kind)
    X = torch.cat([X, torch.randn(15, *X.shape[1:], dtype=F64,
                                  generator=torch.Generator().manual_seed(3))])
    a = bn.analyze(m, X, output=out, conv_operator=True)
    s = a.summary
    assert s["implementation"] == "autodiff" and "positively homogeneous chain" in s["theory"]
    # one definition of the bottleneck rank for every model (capped at min(d_out, d_in))
    k, method = bn.conventions.bottleneck_rank(a.weight_spectra,
                                               jacobian_rank=s["jacobian_rank"])
    J = bn.jacobian(m, X, output=out)
    assert (s["bottleneck_rank"], s["bottleneck_rank_method"]) == (
        min(k, J.shape[1], J.shape[2]), method)
    assert a.layers["balance"].isna().all() and a.layers["near_one"].isna().all()
    reps = a.representations
    assert reps is not None and list(reps["name"])[-1] == "output"
    assert (reps["jac_rank"] <= reps["rep_width"]).all()
    for c in ("rep_energy_rank", "rep_rank_numerical"):
        assert (reps[c] <= reps["rep_width"]).all()
    wl = bn.diagnostics._general.weight_layers(m)
    for (_, mod), o in zip(wl, a.operator_spectra, strict=True):
        if not isinstance(mod, nn.Conv1d | nn.Conv2d):
            assert o == "not a convolution"
    if kind in ("cnn-conv2d-pool", "conv1d"):  # the first conv: stride 1 on a larger grid
        assert not isinstance(a.operator_spectra[0], str)
    text = json.dumps(a.to_dict(), allow_nan=False)
    assert json.loads(text)["summary"]["bound_slack_min"] is None


def test_feature_maps_have_flat_and_per_channel_ranks():
    m = _init(SmallCNN(), 0)
    X = torch.randn(12, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    a = bn.analyze(m, X, ntk=False)
    r = a.representations.set_index("name")
    assert r.loc["act1", "shape"] == [3, 4, 4] and r.loc["act1", "rep_width"] == 48
    assert r.loc["act1", "chan_width"] == 3
    with torch.no_grad():
        A = m.act1(m.conv1(X))
    ch = A.permute(0, 2, 3, 1).reshape(-1, 3)
    sc = torch.linalg.svdvals(ch - ch.mean(0))
    assert_close(r.loc["act1", "chan_erank_participation"],
                 float(sc.pow(2).sum() ** 2 / sc.pow(4).sum()), rtol=1e-12, atol=0,
                 what="per-channel participation ratio")
    assert math.isnan(r.loc["output", "chan_width"])


def test_layer_jacobian_ranks_against_jacrev():
    m, X, _, _ = _make("residual-mlp")
    ev = Evaluation(m, X)
    got = ev.layer_jacobian_ranks()
    from torch.func import jacrev, vmap

    mods = dict(m.named_modules())
    for i, name in enumerate(ev.rep_names[:-1]):
        def h(x: torch.Tensor, name: str = name) -> torch.Tensor:
            keep: list[torch.Tensor] = []
            hd = mods[name].register_forward_hook(lambda _m, _a, o: keep.append(o))
            try:
                m(x[None])
            finally:
                hd.remove()
            return keep[0][0]
        m.eval()
        J = vmap(jacrev(h))(X)
        expected = max(int(np.linalg.matrix_rank(j.detach().numpy())) for j in J)
        assert got[i] == expected, name


@pytest.mark.parametrize("grid", [(5,), (4, 6)])
def test_conv_operator_spectrum_is_the_circular_operator(grid):
    from bnstruct.diagnostics._general import conv_operator_svals

    conv = (nn.Conv1d(2, 3, 3, padding=1, padding_mode="circular") if len(grid) == 1 else
            nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"))
    _init(conv, 0)
    n_in = 2 * math.prod(grid)
    basis = torch.eye(n_in, dtype=F64).reshape(n_in, 2, *grid)
    with torch.no_grad():
        M = (conv(basis) - conv.bias.reshape(1, -1, *([1] * len(grid)))).reshape(n_in, -1).T
    expected = torch.linalg.svdvals(M)
    got = conv_operator_svals(conv, grid, F64)
    assert not isinstance(got, str)
    assert_close(got[:len(expected)], expected, rtol=1e-10, atol=1e-12, what="operator svals")
    strided = nn.Conv2d(2, 3, 3, stride=2)
    assert "stride 1" in conv_operator_svals(strided, (4, 4), F64)


def test_chains_keep_the_structured_path_named():
    m = bn.MLP(3, 5, 3, 2, seed=0, dtype=F64)
    X = torch.randn(7, 3, dtype=F64)
    a = bn.analyze(m, X)
    assert a.summary["implementation"] == "structured" and "theory" not in a.summary
    # the same chain read as a general model (layers= given) agrees on the measurements
    ev = Evaluation(m, X, layers=["layers.0", "layers.1"])
    assert ev.implementation == "autodiff"
    assert_close(ev.jacobian, bn.jacobian(m, X), rtol=1e-10, atol=1e-12, what="J")
    assert_close(ev.ntk("trace"), bn.ntk(m, X, mode="trace"), rtol=1e-10, atol=0, what="tr")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile / jit.script imports
def test_compiled_model_is_analyzed_scripted_is_refused():
    m = _init(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)), 0)
    X = torch.randn(6, 4, dtype=F64)
    compiled = torch.compile(m)
    assert_close(bn.jacobian(compiled, X), bn.jacobian(m, X), rtol=0, atol=0,
                 what="compiled = its original module")
    scripted = torch.jit.script(m)
    with pytest.raises(bn.ConfigError, match="TorchScript.*original nn.Module"):
        bn.analyze(scripted, X)


class NeedsTwo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * mask


@pytest.mark.parametrize("model, X, kw, err, msg", [
    (lambda: _init(SmallCNN(), 0), torch.zeros(3, 4), {}, bn.DataError,
     r"the model fails on X of shape \[3, 4\]"),
    (lambda: _init(nn.Sequential(nn.Linear(4, 2), nn.GELU()), 0), torch.zeros(3, 5), {},
     bn.DataError, r"fails on X of shape \[3, 5\].*shape its forward expects"),
    (lambda: _init(nn.Sequential(nn.Linear(4, 2)), 0), torch.zeros(3, 5), {}, bn.DataError,
     r"X has 5 columns but the model expects d_in = 4"),
    (lambda: _init(NeedsTwo(), 0), torch.zeros(3, 4), {}, bn.DataError,
     "not a function of X alone.*wrap it"),
    (lambda: _init(TupleOut(), 0), torch.zeros(3, 4), {}, bn.ConfigError,
     "returns a tuple.*pass output="),
    (lambda: _init(TupleOut(), 0), torch.zeros(3, 4), {"output": 5}, bn.ConfigError,
     "out of range"),
    (lambda: _init(Encoder(), 0), torch.zeros(3, 4), {"layers": ["blocks.7"]}, bn.ConfigError,
     "no module named 'blocks.7'.*blocks"),
    (lambda: _init(Encoder(), 0), torch.zeros(3, 4) * float("nan"), {}, bn.DataError,
     "non-finite"),
    (lambda: _init(Encoder(), 0), torch.zeros(0, 4), {}, bn.DataError, "empty"),
])
def test_general_bad_inputs_one_line(model, X, kw, err, msg):
    with pytest.raises(err, match=msg) as e:
        bn.analyze(model(), X.to(F64), **kw)
    assert "\n" not in str(e.value)


def test_ghost_trace_used_where_it_applies_and_matches_chunks():
    from bnstruct.diagnostics._autodiff import Functional

    for kind, applies in (("cnn-conv2d-pool", True), ("conv1d", True), ("tuple-output", True),
                          ("dropout-batchnorm", False), ("layernorm-silu", False)):
        m, X, out, _ = _make(kind)
        ev = Evaluation(m, X, output=out)
        f = Functional(m, F64, ev.select)
        ghost = f.ghost_trace(ev.X, ev.d_out)
        assert (ghost is not None) == applies, kind
        if ghost is not None:
            chunks = torch.cat([j.pow(2).sum((1, 2)) for j in f._chunks(ev.X, ev.d_out)])
            assert_close(ghost, chunks, rtol=1e-11, atol=0, what=f"{kind}: ghost trace")


class _MixesPoints(nn.Module):
    """Linear layers only, but the batch mean enters every output: points interact."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.a(x))
        return self.b(h - h.mean(0, keepdim=True))


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_layerwise_path_matches_references_and_refuses_what_it_cannot_do():
    """Strided, dilated, bias-free convolutions and a Linear on [N, T, d]: Jacobian, NTK trace
    and NTK-vector products of the layerwise path against torch.func references; models
    whose points interact or whose weights are tied fall back to the general path (and
    still match)."""
    from bnstruct.diagnostics._autodiff import Functional

    conv = nn.Sequential(nn.Conv2d(2, 3, 3, padding=2, dilation=2), nn.ReLU(),
                         nn.Conv2d(3, 4, (2, 3), stride=(2, 1), padding=(0, 1), bias=False),
                         nn.Tanh(), nn.Flatten(2), nn.Linear(15, 3), nn.GELU(), nn.Flatten(),
                         nn.Linear(12, 2))
    cases = [(conv, (2, 6, 5), True), (_MixesPoints(), (4,), False), (_Tied(), (4,), False)]
    for i, (build, shape, applies) in enumerate(cases):
        m = _init(build, i)
        X = torch.randn(6, *shape, generator=torch.Generator().manual_seed(i), dtype=F64)
        ev = Evaluation(m, X)
        f = Functional(m, F64, ev.select)
        assert (f.layerwise(ev.X) is not None) == applies, i
        m.eval()
        J = ref.jacobian_reference(m, X, F64)
        assert_close(ev.jacobian, J.reshape(J.shape[0], J.shape[1], -1), rtol=1e-10,
                     atol=1e-12, what=f"case {i}: jacobian")
        Kt = ref.ntk_reference(m, X, mode="trace")
        assert_close(ev.ntk("trace"), Kt, rtol=1e-10, atol=_tol(Kt), what=f"case {i}: trace")
        v = torch.randn(X.shape[0], ev.d_out, generator=torch.Generator().manual_seed(9),
                        dtype=F64)
        want = ref.ntk_matvec_reference(m, X, F64)(v)
        with torch.no_grad():
            got = ev.ntk_matvec()(v)
        assert_close(got, want, rtol=1e-10, atol=_tol(want), what=f"case {i}: NTK v")
        assert ev.functional.matvec_method.startswith("layerwise" if applies else "vjp")


class _PostActBlock(nn.Module):
    """A residual block whose output IS its last activation's output tensor."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin, self.out = nn.Linear(d, d), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x + self.lin(x))


def test_default_points_record_a_block_returning_its_activation_once():
    """``blocks.0.out`` and ``blocks.0`` hold the same tensor: one representation, under the
    block's name; a user who names both gets both."""
    from bnstruct.diagnostics import representations
    from bnstruct.diagnostics._general import hook_points, record

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("stem", nn.Linear(3, 4))
    model.add_module("blocks", nn.Sequential(_PostActBlock(4), _PostActBlock(4)))
    model.add_module("head", nn.Linear(4, 2))
    model = model.double()
    X = torch.randn(7, 3, dtype=torch.float64)
    names, outs, _ = record(hook_points(model, None), lambda: model(X), strict=False)
    assert names == ["blocks.0", "blocks.1"]  # nn.Sequential is not a block
    assert outs[0] is not outs[1]
    a = bn.analyze(model, X, ntk=False)
    assert list(a.representations["name"])[:2] == ["blocks.0", "blocks.1"]
    h = X @ model.stem.weight.T + model.stem.bias
    for blk, got in zip(model.blocks, representations(model, X), strict=False):
        h = torch.relu(h + blk.lin(h))
        torch.testing.assert_close(got, h, rtol=1e-12, atol=1e-12)
    both, _, _ = record(hook_points(model, ["blocks.0.out", "blocks.0"]), lambda: model(X),
                        strict=True)
    assert both == ["blocks.0.out", "blocks.0"]
