"""Diagnostics against brute-force float64 references on a registry of tiny chains.

Every fast path (per-layer NTK, backward-recursion Jacobian, Lanczos) is compared with a
dense ``torch.func`` reference (:mod:`bnstruct.diagnostics.reference`) or a closed form.
"""

import math

import numpy as np
import pytest
import torch
from cases import NET_CASES, build, case_id
from torch import nn

import bnstruct as bn
from bnstruct.diagnostics import reference as ref
from bnstruct.diagnostics._chain import forward, parse_chain
from bnstruct.diagnostics._ntk import chain_ntk_matvec
from bnstruct.testing import assert_close

F64 = torch.float64


def _init(m: nn.Module, seed: int) -> nn.Module:
    """Seeded Gaussian weights (1/fan_in * 2) and nonzero biases, float64, no global RNG."""
    g = torch.Generator().manual_seed(seed)
    m = m.to(F64)
    with torch.no_grad():
        for lin in (x for x in m.modules() if isinstance(x, nn.Linear)):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=F64)
                             * math.sqrt(2 / lin.in_features))
            if lin.bias is not None:
                lin.bias.copy_(0.3 * torch.randn(lin.bias.shape, generator=g, dtype=F64))
    return m


class Wrapped(nn.Module):
    """Not a chain: exercises the ``torch.func`` fallback."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _seq_leaky() -> nn.Module:
    return _init(nn.Sequential(nn.Linear(3, 5), nn.LeakyReLU(0.2), nn.Linear(5, 4),
                               nn.Identity(), nn.ReLU(), nn.Linear(4, 2)), 1)


def _seq_nested_trailing() -> nn.Module:
    return _init(nn.Sequential(nn.Sequential(nn.Linear(2, 4), nn.ReLU()),
                               nn.Linear(4, 3, bias=False), nn.LeakyReLU(-0.5),
                               nn.Linear(3, 3), nn.ReLU()), 2)


# the registry: every chain kind the fast paths handle
CHAINS = {case_id(c): (lambda c=c: build(c, seed=3)) for c in NET_CASES}
CHAINS["deeplinear"] = lambda: bn.DeepLinear(3, [4, 5], 3, 2, seed=1, dtype=F64)
CHAINS["seq-leaky-identity"] = _seq_leaky
CHAINS["seq-nested-trailing-relu"] = _seq_nested_trailing


@pytest.fixture(params=list(CHAINS), ids=list(CHAINS))
def chain_net(request: pytest.FixtureRequest) -> nn.Module:
    return CHAINS[request.param]()


def _d_in(m: nn.Module) -> int:
    return parse_chain(m).d_in


def _points(m: nn.Module, n: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, _d_in(m), generator=g, dtype=F64)


def _tol(t: torch.Tensor) -> float:
    return 1e-12 * float(t.abs().max()) + 1e-300


# --- NTK -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["full", "trace", "diag"])
def test_ntk_matches_jacobian_contraction(chain_net, mode):
    X = _points(chain_net)
    expected = ref.ntk_reference(chain_net, X, mode=mode)
    got = bn.ntk(chain_net, X, mode=mode)
    assert got.shape == expected.shape
    assert_close(got, expected, rtol=1e-9, atol=_tol(expected), what=f"ntk mode={mode}")


def test_ntk_cross_kernel_and_shapes(chain_net):
    X, X2 = _points(chain_net, 4, 0), _points(chain_net, 3, 1)
    expected = ref.ntk_reference(chain_net, X, X2)
    got = bn.ntk(chain_net, X, X2)
    d_out = parse_chain(chain_net).d_out
    assert got.shape == (4, 3, d_out, d_out)
    assert_close(got, expected, rtol=1e-9, atol=_tol(expected), what="ntk(X, X2)")
    # trace and diag are the diagonal of the full kernel
    full = bn.ntk(chain_net, X)
    idx = torch.arange(4)
    assert_close(bn.ntk(chain_net, X, mode="diag"), full[idx, idx], rtol=1e-12,
                 atol=_tol(full), what="diag vs full")
    assert_close(bn.ntk(chain_net, X, mode="trace"),
                 full[idx, idx].diagonal(dim1=1, dim2=2).sum(-1), rtol=1e-12, atol=_tol(full),
                 what="trace vs full")


def test_ntk_full_symmetric_blocks_over_many_points():
    """N > the 32-point row block: the mirrored triangle of Theta(X, X) is exercised."""
    m = build(NET_CASES[3], seed=2)
    X = _points(m, 75, 3)
    expected = ref.ntk_reference(m, X)
    got = bn.ntk(m, X)
    assert_close(got, expected, rtol=1e-9, atol=_tol(expected), what="ntk(X) with 3 blocks")
    assert_close(got, bn.ntk(m, X, X), rtol=1e-12, atol=_tol(expected), what="ntk(X) vs (X, X)")


def test_ntk_matvec_is_exact(chain_net):
    X = _points(chain_net, 4)
    chain = parse_chain(chain_net)
    K = ref.ntk_reference(chain_net, X)
    N, d = X.shape[0], chain.d_out
    M = K.permute(0, 2, 1, 3).reshape(N * d, N * d)
    v = torch.randn(N, d, generator=torch.Generator().manual_seed(5), dtype=F64)
    got = chain_ntk_matvec(chain, forward(chain, X))(v)
    expected = (M @ v.reshape(-1)).reshape(N, d)
    assert_close(got, expected, rtol=1e-9, atol=_tol(expected), what="Theta v")


def test_ntk_max_eig_lanczos_matches_eigvalsh(chain_net):
    X = _points(chain_net, 6)
    K = ref.ntk_reference(chain_net, X)
    N, d = K.shape[0], K.shape[2]
    dense = torch.linalg.eigvalsh(K.permute(0, 2, 1, 3).reshape(N * d, N * d))[-1]
    for method in ("lanczos", "dense", "auto"):
        assert_close(bn.ntk_max_eig(chain_net, X, method=method), dense, rtol=1e-9, atol=0,
                     what=f"ntk_max_eig method={method}")


def test_generic_model_falls_back_to_torch_func():
    inner = build(NET_CASES[3], seed=4)
    wrapped = Wrapped(inner)
    X = _points(inner, 7)
    for mode in ("full", "trace", "diag"):
        e = bn.ntk(inner, X, mode=mode)
        assert_close(bn.ntk(wrapped, X, mode=mode), e, rtol=1e-9, atol=_tol(e),
                     what=f"fallback ntk {mode}")
    assert_close(bn.ntk_max_eig(wrapped, X, method="lanczos"),
                 bn.ntk_max_eig(inner, X, method="dense"), rtol=1e-9, atol=0,
                 what="fallback ntk_max_eig (vjp/jvp matvecs)")
    assert_close(bn.jacobian(wrapped, X), bn.jacobian(inner, X), rtol=1e-12, atol=1e-14,
                 what="fallback jacobian")


# --- Hessian ---------------------------------------------------------------------------

def test_hessian_max_eig_matches_dense_eigvalsh(chain_net):
    X = _points(chain_net, 6)
    d_out = parse_chain(chain_net).d_out
    Y = torch.randn(6, d_out, generator=torch.Generator().manual_seed(9), dtype=F64)
    H = ref.hessian_dense(chain_net, X, Y, 0.05)
    expected = torch.linalg.eigvalsh(H)[-1]
    for method in ("lanczos", "dense"):
        assert_close(bn.hessian_max_eig(chain_net, X, Y, 0.05, method=method), expected,
                     rtol=1e-8, atol=1e-10, what=f"hessian_max_eig {method}")


def test_hessian_of_affine_model_closed_form():
    """Depth 1: H = (2/N) [X 1]^T [X 1] (x) I_dout + 2 lam I, independent of torch.func."""
    m = build(NET_CASES[0], seed=7)
    X = _points(m, 9)
    Y = torch.randn(9, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    Xt = torch.cat([X, torch.ones(9, 1, dtype=F64)], 1)
    lam = 0.3
    expected = 2 / 9 * torch.linalg.eigvalsh(Xt.T @ Xt)[-1] + 2 * lam
    assert_close(bn.hessian_max_eig(m, X, Y, lam, method="lanczos"), expected, rtol=1e-9,
                 atol=0, what="affine Hessian top eigenvalue")


# --- Jacobian, log-pdet ----------------------------------------------------------------

def test_jacobian_matches_jacrev_and_finite_differences(chain_net):
    X = _points(chain_net, 5)
    J = bn.jacobian(chain_net, X)
    d_out = parse_chain(chain_net).d_out
    assert J.shape == (5, d_out, X.shape[1])
    assert_close(J, ref.jacobian_reference(chain_net, X, F64), rtol=1e-12, atol=1e-13,
                 what="jacobian vs jacrev")
    h = 1e-6
    with torch.no_grad():
        fd = torch.stack([(chain_net(X + h * e) - chain_net(X - h * e)) / (2 * h)
                          for e in torch.eye(X.shape[1], dtype=F64)], dim=2)
    assert_close(J, fd, rtol=1e-6, atol=1e-7, what="jacobian vs central differences")


def test_log_pdet_hand_computed():
    U, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0),
                                       dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1),
                                       dtype=F64))
    s = torch.tensor([3.0, 0.5, 0.0], dtype=F64)
    J = U[:, :3] @ torch.diag(s) @ V.T  # 4 x 3, rank 2
    got = bn.log_pdet(torch.stack([J, 2 * J]), 2)
    assert_close(got, [math.log(1.5), math.log(1.5 * 4)], rtol=1e-12, atol=1e-14,
                 what="log|J|_2")
    assert_close(bn.log_pdet(J, 1), math.log(3.0), rtol=1e-12, atol=1e-14, what="log|J|_1")
    assert bn.log_pdet(J, 3).item() == -math.inf  # rank 2 < 3
    assert bn.log_pdet(J, 0).item() == 0.0
    with pytest.raises(bn.ConfigError, match="exceeds"):
        bn.log_pdet(J, 4)


# --- spectra and effective ranks -------------------------------------------------------

def test_weight_spectra_match_numpy_svd(chain_net):
    spectra = bn.weight_spectra(chain_net)
    Ws = [m.weight for m in chain_net.modules() if isinstance(m, nn.Linear)]
    assert len(spectra) == len(Ws)
    for l, (s, W) in enumerate(zip(spectra, Ws, strict=True), start=1):
        expected = np.linalg.svd(W.detach().numpy(), compute_uv=False)
        assert_close(s, expected, rtol=1e-12, atol=1e-14, what=f"spectrum of W_{l}")


@pytest.mark.parametrize("S, entropy, participation, threshold", [
    ([3.0, 3.0, 0.0], 2.0, 2.0, 2),
    ([4.0, 2.0, 1.0, 1.0], 2 ** 1.75, 22 ** 2 / 274, 2),  # p = (1/2, 1/4, 1/8, 1/8)
    ([5.0], 1.0, 1.0, 1),
    ([0.0, 0.0], 0.0, 0.0, 0),
])
def test_effective_rank_hand_computed(S, entropy, participation, threshold):
    for method, expected in (("entropy", entropy), ("participation", participation)):
        assert_close(bn.effective_rank(S, method), expected, rtol=1e-12, atol=1e-14,
                     what=f"effective_rank {method} of {S}")
        # scale invariant and order free
        assert_close(bn.effective_rank(torch.tensor(S[::-1]) * 1e3, method), expected,
                     rtol=1e-12, atol=1e-14, what=f"scaled {method}")
    assert bn.effective_rank(S, "threshold", rtol=0.3) == threshold
    assert bn.effective_rank([1.0, 0.5, 0.05], "threshold") == 2  # default rtol 0.1
    assert bn.effective_rank([1.0, 0.5, 0.05], "threshold", rtol=0.01) == 3


def test_effective_rank_bad_input():
    with pytest.raises(bn.ConfigError, match="method"):
        bn.effective_rank([1.0], "nuclear")
    with pytest.raises(bn.DataError, match="non-finite"):
        bn.effective_rank([1.0, float("nan")])
    with pytest.raises(bn.DataError, match=">= 0"):
        bn.effective_rank([1.0, -1.0])


# --- representations -------------------------------------------------------------------

def test_representations_reproduce_the_forward_pass(chain_net):
    X = _points(chain_net, 6)
    post = bn.representations(chain_net, X)
    pre = bn.representations(chain_net, X, pre=True)
    chain = parse_chain(chain_net)
    assert len(post) == len(pre) == chain.depth
    # independent forward pass: run the modules one by one
    mods = [m for m in chain_net.modules()
            if isinstance(m, nn.Linear | nn.ReLU | nn.LeakyReLU | nn.Identity)]
    if isinstance(chain_net, bn.MLP | bn.DeepLinear):
        relu = isinstance(chain_net, bn.MLP)
        mods = []
        for i, lin in enumerate(chain_net.layers):
            mods += [lin] + ([nn.ReLU()] if relu and i < chain_net.depth - 1 else [])
    h, zs, outs = X, [], []
    with torch.no_grad():
        for m in mods:
            if isinstance(m, nn.Linear):
                if zs:
                    outs.append(h)
                h = h @ m.weight.T + (m.bias if m.bias is not None else 0)
                zs.append(h)
            else:
                h = m(h)
        outs.append(h)
    for l in range(chain.depth):
        assert_close(pre[l], zs[l], rtol=1e-14, atol=1e-14, what=f"z_{l + 1}")
        assert_close(post[l], outs[l], rtol=1e-14, atol=1e-14, what=f"a_{l + 1}")
    with torch.no_grad():
        assert_close(post[-1], chain_net(X), rtol=0, atol=0, what="last = f(X)")


def test_representations_use_the_compute_dtype():
    """Like every measurement: float64 by default from the cast chain; dtype=None keeps the
    model's dtype."""
    m = bn.MLP(3, 4, 3, 2, seed=0)  # float32
    X = torch.randn(5, 3, dtype=F64)
    reps = bn.representations(m, X)
    assert all(r.dtype == F64 for r in reps)
    m64 = bn.MLP(3, 4, 3, 2, seed=0, dtype=F64)
    with torch.no_grad():
        m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
        assert_close(reps[-1], m64(X), rtol=1e-14, atol=1e-14, what="float64 f(X)")
    reps32 = bn.representations(m, X, dtype=None)
    assert all(r.dtype == torch.float32 for r in reps32)
