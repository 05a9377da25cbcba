"""Structure found by tracing (issue 18): the same function gives the same numbers however it
is wrapped. bnstruct's MLP, the same weights as a plain ``nn.Sequential(Linear, ReLU, ...)``,
the MLP inside a wrapper whose forward only calls it, and the MLP held as an attribute next
to unrelated buffers, parameters and modules all take the structured path and agree."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnstruct as bn
from bnstruct.diagnostics import ChainEvaluation, Evaluation, ModuleEvaluation

F64 = torch.float64


class CallsIt(nn.Module):
    """forward only calls the inner MLP."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class HoldsIt(nn.Module):
    """The MLP as an attribute, plus unrelated buffers, a parameter and a module that
    forward never uses."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp
        self.register_buffer("mean", torch.zeros(3))
        self.register_buffer("steps", torch.tensor(7))
        self.temperature = nn.Parameter(torch.ones(()))
        self.head = nn.Linear(2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def _sequential(mlp: bn.MLP) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i, lin in enumerate(mlp.linears):
        new = nn.Linear(lin.in_features, lin.out_features, dtype=lin.weight.dtype)
        new.load_state_dict(lin.state_dict())
        mods += [new] if i == len(mlp.linears) - 1 else [new, nn.ReLU()]
    return nn.Sequential(*mods)


@pytest.fixture(scope="module")
def trained() -> tuple[bn.MLP, torch.Tensor, torch.Tensor]:
    """A small trained composite MLP (float32, like a run), so the spectra have structure."""
    task = bn.make_task("composite", k=2, n_train=96, seed=0)
    mlp = bn.MLP(task.X.shape[1], 16, 6, task.Y.shape[1], seed=0)
    X, Y = task.X.float(), task.Y.float()
    opt = torch.optim.Adam(mlp.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        ((mlp(X) - Y).pow(2).sum(1).mean() + 0.01 * bn.param_norm2(mlp)).backward()
        opt.step()
    return mlp, task.X.float(), task.Y.float()


def _numeric(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["name", "skipped"]).astype(float)


def test_wrapped_mlps_give_the_same_analysis(trained) -> None:  # type: ignore[no-untyped-def]
    mlp, X, Y = trained
    views = {"MLP": mlp, "Sequential": _sequential(mlp), "wrapper": CallsIt(mlp),
             "nested wrapper": CallsIt(CallsIt(_sequential(mlp))), "attribute": HoldsIt(mlp)}
    ref = bn.analyze(mlp, X, Y=Y, lam=0.01)
    assert ref.summary["bound_slack_min"] is not None and ref.summary["bottleneck_rank"] >= 1
    for name, m in views.items():
        assert isinstance(Evaluation(m, X), ChainEvaluation), name
        a = bn.analyze(m, X, Y=Y, lam=0.01)
        assert a.representations is None, name  # the chain path: one row per layer
        assert not a.layers[["rep_rank_numerical", "balance"]].iloc[:-1].isna().any().any()
        np.testing.assert_allclose(_numeric(a.layers).to_numpy(),
                                   _numeric(ref.layers).to_numpy(), rtol=1e-7, atol=0,
                                   equal_nan=True, err_msg=f"{name}: per-layer columns")
        assert list(a.layers["skipped"]) == list(ref.layers["skipped"]), name
        for key in ("bottleneck_rank", "bottleneck_rank_method", "k", "bottleneck_layers",
                    "jacobian_rank"):
            assert a.summary[key] == ref.summary[key], (name, key)
        for key in ("bound_slack_min", "bound_c1", "bound_lhs", "balancedness_max",
                    "param_norm2", "ntk_max_eig", "objective"):
            assert math.isclose(a.summary[key], ref.summary[key], rel_tol=1e-7), (name, key)
        assert a.bound is not None and ref.bound is not None
        np.testing.assert_allclose(a.bound[["lhs", "rhs", "slack"]].to_numpy(),
                                   ref.bound[["lhs", "rhs", "slack"]].to_numpy(), rtol=1e-7,
                                   atol=0, err_msg=f"{name}: bound")
    assert list(bn.analyze(HoldsIt(mlp), X).layers["name"])[0] == "mlp.layers.0"


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(F.relu(self.a(x)))


class SideEffect(nn.Module):
    """An in-place ReLU whose result forward does not use: fx sees a second reader."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        h.relu_()
        return self.b(h)


class Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.shape[0] > 100 else self.a(x)  # Python control flow on the input


class Functional(nn.Module):
    """Functional activations and an identity method count as the chain's."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = F.dropout(F.leaky_relu(self.b(h), 0.2), 0.1, self.training).contiguous()
        return self.c(h)


@pytest.mark.parametrize("model, why", [
    (Residual(), "reads 2 values"), (SideEffect(), "also read by"),
    (Branches(), "cannot be traced by torch.fx"),
    (nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)), r"unsupported module '1'"),
])
def test_what_is_not_a_chain_takes_the_general_path(model, why) -> None:  # type: ignore[no-untyped-def]
    X = torch.randn(5, 3, dtype=F64)
    with pytest.raises(bn.ConfigError, match=why):
        bn.models.linear_chain(model)
    ev = Evaluation(model.double(), X)
    assert isinstance(ev, ModuleEvaluation) and not ev.is_chain
    assert bn.analyze(model, X).summary["bound_slack_min"] is None


def test_functional_activations_are_read_from_the_graph() -> None:
    torch.manual_seed(0)
    m = Functional().double()
    lc = bn.models.linear_chain(m)
    assert lc.names == ("a", "b", "c") and lc.slopes == ((0.0,), (0.2,), ())
    X = torch.randn(7, 3, dtype=F64)
    ev = Evaluation(m, X)
    assert isinstance(ev, ChainEvaluation)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(ev.output, m(X), rtol=1e-13, atol=1e-13)
    from bnstruct.diagnostics import reference

    ref = reference.jacobian_reference(m, X, F64)
    torch.testing.assert_close(ev.jacobian, ref, rtol=1e-12, atol=1e-13)


def test_the_kept_trace_follows_changes_to_the_model() -> None:
    """The traced outcome is kept per model; swapping a layer, an activation or a parameter
    traces again."""
    mlp = bn.MLP(4, 4, 3, 4, seed=0, dtype=F64)
    wrapped = CallsIt(mlp)
    assert bn.models.linear_chain(wrapped).slopes == ((0.0,), (0.0,), ())
    mlp.activation = "identity"  # FeedForward reads it in forward
    assert bn.models.linear_chain(wrapped).slopes == ((), (), ())
    mlp.activation = "relu"
    mlp.layers[1] = nn.Sequential(nn.Linear(4, 4, dtype=F64), nn.Tanh())
    with pytest.raises(bn.ConfigError, match=r"unsupported module 'inner.layers.1.1' \(Tanh\)"):
        bn.models.linear_chain(wrapped)
    mlp.layers[1] = nn.Linear(4, 4, dtype=F64)
    mlp.layers[1].weight = mlp.layers[0].weight  # tied: no longer a chain
    with pytest.raises(bn.ConfigError, match="shares a parameter"):
        bn.models.linear_chain(wrapped)
