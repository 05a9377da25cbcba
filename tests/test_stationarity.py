"""When not to trust analyze: the distance of a net from a stationary point of its objective
(:mod:`bnstruct.diagnostics._stationarity`)."""

from __future__ import annotations

import pytest
import torch

import bnstruct as bn
from bnstruct.diagnostics import BALANCE_WARN, stationarity


@pytest.fixture(scope="module")
def task():
    return bn.tasks.composite(n_train=128, k=2, seed=0)


def _trained(task, steps: int):
    torch.manual_seed(0)
    model = bn.MLP(task.d_in, width=32, depth=6, d_out=task.d_out, seed=0)
    bn.train(model, task, bn.default_recipe(lam=0.005, steps=steps), progress=False)
    return model


def test_warning_fires_on_a_300_step_run_and_is_silent_on_a_converged_one(task, one_thread):
    early = stationarity(_trained(task, 300), task.X, task.Y, 0.005)
    assert early.warning is not None and not early.trusted
    assert early.balance is not None and early.balance > BALANCE_WARN
    assert "not converged" in early.warning and "more steps" in early.warning
    done = _trained(task, 3000)
    late = stationarity(done, task.X, task.Y, 0.005)
    assert late.warning is None and late.trusted, late
    assert late.balance is not None and late.balance < BALANCE_WARN / 5
    a = bn.analyze(done, task.X, 2, Y=task.Y, lam=0.005, ntk=False)  # the same in the summary
    assert a.summary["warning"] is None
    assert a.summary["rescaling_grad"] == pytest.approx(late.balance, rel=1e-9)
    assert a.summary["rel_fit"] == pytest.approx(late.rel_fit, rel=1e-9)
    assert "warning" not in bn.analyze(done, task.X, 2, ntk=False).summary  # needs Y and lam


def test_a_net_that_does_not_fit_is_flagged(task):
    net = bn.MLP(task.d_in, width=8, depth=3, d_out=task.d_out, seed=0)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1e-3)  # f ~ 0: balanced enough, but no fit at all
    s = stationarity(net, task.X, task.Y, 0.005)
    assert s.rel_fit > 0.9 and s.warning is not None and "does not fit" in s.warning


def test_rescaling_gradient_is_the_objectives_derivative_along_the_symmetry():
    """d/du of the objective when hidden neuron i's incoming weights (and bias) are scaled by
    e^u and its outgoing weights by e^-u equals 2 lam (A_i - B_i) (f is unchanged), in
    float64 against autograd."""
    torch.manual_seed(1)
    net = bn.MLP(3, width=5, depth=3, d_out=2, seed=1).double()
    X, Y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    lam = 0.1
    W1, b1 = net.layers[0].weight.detach(), net.layers[0].bias.detach()
    W2 = net.layers[1].weight.detach()
    i = 2
    u = torch.zeros((), dtype=torch.float64, requires_grad=True)

    def objective(u):
        s_in = torch.ones(5, dtype=torch.float64).index_put((torch.tensor([i]),), torch.exp(u))
        s_out = torch.ones(5, dtype=torch.float64).index_put((torch.tensor([i]),), torch.exp(-u))
        W1u, b1u, W2u = W1 * s_in[:, None], b1 * s_in, W2 * s_out[None, :]
        h = torch.relu(X @ W1u.T + b1u)
        h = torch.relu(h @ W2u.T + net.layers[1].bias)
        f = h @ net.layers[2].weight.T + net.layers[2].bias
        norm2 = (W1u ** 2).sum() + (b1u ** 2).sum() + (W2u ** 2).sum() + sum(
            (p ** 2).sum() for p in (net.layers[1].bias, *net.layers[2].parameters()))
        return ((f - Y) ** 2).sum() / 16 + lam * norm2
    (g,) = torch.autograd.grad(objective(u), u)
    A = float((W1[i] ** 2).sum() + b1[i] ** 2)
    B = float((W2[:, i] ** 2).sum())
    torch.testing.assert_close(g.item(), 2 * lam * (A - B), rtol=1e-10, atol=1e-12)
