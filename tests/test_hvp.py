"""Both Hessian-vector products (issue 18) against the dense float64 reference Hessian of
:mod:`bnstruct.diagnostics.reference`, on a chain and on a general model; analyze names the
one it used."""

import pytest
import torch
from torch import nn

import bnstruct as bn
from bnstruct.diagnostics import HVP_METHODS, Evaluation
from bnstruct.diagnostics import reference as ref
from bnstruct.diagnostics._evaluation import hvp_function
from bnstruct.testing import assert_close

F64 = torch.float64


def _models() -> list[nn.Module]:
    torch.manual_seed(0)
    return [bn.MLP(3, 5, 3, 2, seed=1, dtype=F64),
            nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.LayerNorm(5), nn.Linear(5, 2)).double()]


@pytest.mark.parametrize("method", ["forward-over-reverse", "reverse-over-reverse"])
def test_hvp_matches_the_dense_reference(method: str) -> None:
    g = torch.Generator().manual_seed(2)
    for m in _models():
        X = torch.randn(9, 3, generator=g, dtype=F64)
        Y = torch.randn(9, 2, generator=g, dtype=F64)
        ev = Evaluation(m, X)
        fn, theta0 = ev.functional.objective(ev.X, ev.check_Y(Y), 0.03)
        H = ref.hessian_dense(m, X, Y, 0.03)
        hvp = hvp_function(fn, theta0, method)
        for _ in range(3):
            v = torch.randn(theta0.numel(), generator=g, dtype=F64)
            want = H @ v
            assert_close(hvp(v), want, rtol=1e-10, atol=1e-12 * float(want.abs().max()),
                         what=f"{type(m).__name__} {method}")


def test_analyze_names_the_product_and_unknown_ones_are_refused() -> None:
    m = _models()[0]
    X = torch.randn(6, 3, dtype=F64)
    Y = torch.randn(6, 2, dtype=F64)
    s = bn.analyze(m, X, Y=Y, lam=0.01, hessian=True, ntk=False).summary
    assert s["hvp_method"] == HVP_METHODS["cpu"]
    H = ref.hessian_dense(m, X, Y, 0.01)
    assert_close(s["hessian_max_eig"], float(torch.linalg.eigvalsh(H)[-1]), rtol=1e-9,
                 atol=0, what="hessian_max_eig")
    assert "hvp_method" not in bn.analyze(m, X, Y=Y, lam=0.01, ntk=False).summary
    with pytest.raises(bn.ConfigError, match="unknown Hessian-vector product"):
        hvp_function(lambda t: t.sum(), torch.zeros(2, dtype=F64), "finite-differences")
