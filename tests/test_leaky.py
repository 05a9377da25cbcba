"""Leaky ResNets: the model against its discrete formula written out, the layer steps'
validation, the leak's extremes, the family in the registry and the engine, and every
diagnostic against a dense NumPy reference in float64 on tiny sizes; the Hamiltonian identity
of THEORY 7 at a critical point reached in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bnstruct as bn
from bnstruct import ModelSpec, RunConfig
from bnstruct.diagnostics import (
    cost_of_identity,
    cost_of_identity_lower,
    leaky_table,
    nonneg_gap,
)
from bnstruct.errors import ConfigError
from bnstruct.tasks import TaskSpec, teacher
from bnstruct.training import Stage, train_batched

D = torch.float64


def _net(leak: float = 2.0, depth: int = 5, width: int = 4, steps=None, seed: int = 0,
         d_in: int = 3, d_out: int = 2) -> bn.LeakyResNet:
    m = bn.LeakyResNet(d_in, width, depth, d_out, leak=leak, steps=steps, seed=seed, dtype=D)
    with torch.no_grad():  # non-zero biases, so the bias column is exercised
        for W in m.W:
            W[:, -1] = torch.linspace(-0.5, 0.5, width, dtype=D)
    return m


def _forward_np(m: bn.LeakyResNet, X: np.ndarray) -> np.ndarray:
    """The discrete formula written out (paper orientation, A is w x N)."""
    A = m.inp.detach().numpy() @ X.T
    for W, r in zip(m.W, m.steps.numpy(), strict=True):
        Wn = W.detach().numpy()
        S = np.vstack([np.maximum(A, 0), np.ones((1, A.shape[1]))])
        A = (1 - r * m.leak) * A + r * Wn @ S
    return (m.out.detach().numpy() @ A).T


def test_forward_is_the_discrete_formula():
    rho = [0.1, 0.3, 0.2, 0.25, 0.15]
    m = _net(leak=2.5, steps=rho)
    X = torch.randn(7, 3, dtype=D, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(m(X).detach().numpy(), _forward_np(m, X.numpy()), rtol=1e-12,
                               atol=1e-12)
    reps = m.representations(X)
    assert len(reps) == 6 and all(tuple(a.shape) == (7, 4) for a in reps)


@pytest.mark.parametrize("steps, match", [
    ([0.5, 0.5, -0.0, 0.0, 0.0], "positive"),
    ([0.2, 0.2, 0.2, 0.2, 0.3], "sum to 1"),
    ([0.2, 0.2, 0.2, 0.4], "5"),
    ([0.6, 0.1, 0.1, 0.1, 0.1], "rho_l \\* leak must be < 1"),
    ("abc", "steps must be"),
])
def test_steps_are_validated(steps, match):
    with pytest.raises(ConfigError, match=match) as e:
        bn.LeakyResNet(3, 4, 5, 2, leak=2.0, steps=steps)
    assert "\n" not in str(e.value)


def test_leak_and_sizes_are_validated():
    for leak in (0, -1.0, float("nan"), True, "4"):
        with pytest.raises(ConfigError):
            bn.LeakyResNet(3, 4, 5, 2, leak=leak)
    with pytest.raises(ConfigError, match="rho_l"):
        bn.LeakyResNet(3, 4, 5, 2, leak=5.0)  # equal steps 1/5 * 5 = 1
    with pytest.raises(ConfigError):
        bn.LeakyResNet(3, 0, 5, 2, leak=1.0)


def test_leak_extremes():
    X = torch.randn(6, 3, dtype=D, generator=torch.Generator().manual_seed(2))
    # leak -> 0: a plain ResNet, A_l = A_{l-1} + rho_l W_l sigma(A_{l-1})
    m = _net(leak=1e-12)
    A = X @ m.inp.T
    for W, r in zip(m.W, m.steps, strict=True):
        A = A + r * (torch.relu(A) @ W[:, :-1].T + W[:, -1])
    torch.testing.assert_close(m(X), A @ m.out.T, rtol=1e-10, atol=1e-10)
    # rho_l leak -> 1: a fully connected ReLU net, A_l = rho_l W_l sigma(A_{l-1})
    L = 5
    m = _net(leak=L * (1 - 1e-12), depth=L)
    A = X @ m.inp.T
    for W, r in zip(m.W, m.steps, strict=True):
        A = r * (torch.relu(A) @ W[:, :-1].T + W[:, -1])
    torch.testing.assert_close(m(X), A @ m.out.T, rtol=1e-9, atol=1e-9)


@torch.no_grad()
def test_penalty_weights_are_the_papers():
    m = _net(leak=2.0, steps=[0.1, 0.3, 0.2, 0.25, 0.15])
    c = m.penalty_weights()
    assert c["W.1"] == pytest.approx(0.3 / 4) and c["inp"] == c["out"] == pytest.approx(1 / 4)
    ref = sum(0.5 / 2.0 * float(W.pow(2).sum()) * r for W, r in
              zip(m.W, [0.1, 0.3, 0.2, 0.25, 0.15], strict=True)) \
        + (float(m.inp.pow(2).sum()) + float(m.out.pow(2).sum())) / 4
    assert float(m.penalty_norm2()) == pytest.approx(ref, rel=1e-12)


def test_registry_config_and_names():
    spec = ModelSpec("leaky-resnet", 8, 6, leak=3.0)
    m = spec.build(3, 2, seed=0, dtype=D, device=torch.device("cpu"))
    assert isinstance(m, bn.LeakyResNet) and m.leak == 3.0 and m.depth == 6
    cfg = RunConfig(task=TaskSpec("teacher", (("d_in", 3), ("d_out", 2), ("k", 2))),
                    model=spec)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert "-leaky-resnet-Lt3-L6-w8-" in cfg.default_name()
    assert "leak" not in RunConfig().to_dict()["model"]  # the MLPs' digests are unchanged
    for bad, match in (({"kind": "leaky-resnet"}, "needs leak"),
                       ({"kind": "mlp", "leak": 2.0}, "option of model leaky-resnet"),
                       ({"kind": "leaky-resnet", "leak": 4.0, "depth": 4}, "more than"),
                       ({"kind": "leaky-resnet", "leak": 1.0, "adapt_every": 0}, "adapt_every")):
        with pytest.raises(ConfigError, match=match):
            ModelSpec(**bad)


def test_trains_in_a_batch_as_alone_and_adapts_its_steps():
    task = teacher(24, 8, k=2, d_in=3, d_out=2, hidden=8, seed=0).to("cpu", D)
    st = (Stage("adam", 2e-3, 1e-3, 20), Stage("adam", 5e-4, 1e-3, 10))
    alone = _net(seed=1)
    batch = [_net(seed=0), _net(seed=1)]
    r1 = bn.train(alone, task, st, seed=1, log_every=10)
    r2 = train_batched(batch, task, [st, st], [0, 1], log_every=10)
    torch.testing.assert_close(alone.W[2], batch[1].W[2], rtol=1e-10, atol=1e-12)
    assert r1.history["objective"].iloc[-1] == pytest.approx(
        r2[1].history["objective"].iloc[-1], rel=1e-9)
    assert r1.status == "completed" and "layer_steps" in r1.history
    m = bn.LeakyResNet(3, 4, 5, 2, leak=2.0, adapt_every=10, seed=0, dtype=D)
    r = bn.train(m, task, st, log_every=10)
    rows = [np.array(s.split(), float) for s in r.history["layer_steps"]]
    assert np.allclose(rows[0], 0.2) and not np.allclose(rows[-1], 0.2)
    assert all(abs(x.sum() - 1) < 1e-5 and (x * 2.0 < 1).all() for x in rows)
    np.testing.assert_allclose(rows[-1], m.steps.numpy(), rtol=1e-5)


# ---- diagnostics against dense references ----------------------------------------------

def _dense_coi(A: np.ndarray, gamma0: float) -> float:
    S = np.hstack([np.maximum(A, 0), np.ones((A.shape[0], 1))])
    K = S @ S.T
    M = np.linalg.pinv(K) if gamma0 == 0 else np.linalg.inv(
        K + gamma0 * np.linalg.norm(K, 2) * np.eye(K.shape[0]))
    return float(np.trace(A.T @ M @ A))


@pytest.mark.parametrize("gamma0", [0.0, 1e-4, 1e-2])
def test_cost_of_identity_against_dense(gamma0):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((12, 4)) @ rng.standard_normal((4, 5))
    assert cost_of_identity(A, gamma0) == pytest.approx(_dense_coi(A, gamma0), rel=1e-8)
    assert cost_of_identity(A, gamma0) >= cost_of_identity_lower(A) * (1 - 1e-9) \
        or gamma0 > 0


@pytest.mark.parametrize("r", [1, 3, 5])
def test_cost_of_identity_is_the_rank_of_nonnegative_A(r):
    rng = np.random.default_rng(r)
    A = np.abs(rng.standard_normal((20, r))) @ np.abs(rng.standard_normal((r, 6)))
    assert cost_of_identity(A) == pytest.approx(r, abs=1e-8)
    assert cost_of_identity(torch.as_tensor(A)) == pytest.approx(r, abs=1e-8)
    assert cost_of_identity_lower(A) <= r + 1e-9


def test_lower_bound_and_nonneg_gap_against_dense():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((9, 4))
    s = np.linalg.svd(A, compute_uv=False)
    assert cost_of_identity_lower(A) == pytest.approx(s.sum() ** 2 / (s ** 2).sum(), rel=1e-12)
    assert nonneg_gap(A) == pytest.approx(np.linalg.norm(np.minimum(A, 0)) / np.linalg.norm(A),
                                          rel=1e-12)
    assert nonneg_gap(np.abs(A)) == 0.0
    for bad in (np.zeros(3), np.ones((2, 2, 2))):
        with pytest.raises(ConfigError):
            cost_of_identity(bad)
    with pytest.raises(ConfigError, match="gamma0"):
        cost_of_identity(A, -1.0)


@pytest.mark.parametrize("gamma0", [0.0, 1e-3])
def test_leaky_table_against_dense(gamma0):
    m = _net(leak=2.5, steps=[0.1, 0.3, 0.2, 0.25, 0.15])
    X = torch.randn(10, 3, dtype=D, generator=torch.Generator().manual_seed(4))
    Y = torch.randn(10, 2, dtype=D, generator=torch.Generator().manual_seed(5))
    lam = 0.01
    tab, ws, rs = leaky_table(m, X, Y=Y, lam=lam, gamma0=gamma0)
    reps = [a.detach().numpy() for a in m.representations(X)]
    rho, Lt = np.array([0.1, 0.3, 0.2, 0.25, 0.15]), 2.5
    # momentum B_l = -(1/lam) d fit / d A_l by finite differences of the forward written out
    for l in range(1, 6):
        A0, A1 = reps[l - 1], reps[l]
        S0 = np.hstack([np.maximum(A0, 0), np.ones((10, 1))])
        K = S0 @ S0.T
        M = np.linalg.pinv(K) if gamma0 == 0 else np.linalg.inv(
            K + gamma0 * np.linalg.norm(K, 2) * np.eye(10))
        Ad = (A1 - A0) / rho[l - 1]
        kin = np.trace(Ad.T @ M @ Ad) / (2 * Lt)
        pot = Lt / 2 * np.trace(A0.T @ M @ A0)
        row = tab.iloc[l - 1]
        assert row["kinetic"] == pytest.approx(kin, rel=1e-7)
        assert row["potential"] == pytest.approx(pot, rel=1e-7)
        assert row["hamiltonian"] == pytest.approx(kin - pot, rel=1e-6, abs=1e-9 * pot)
        assert row["coi"] == pytest.approx(_dense_coi(A1, gamma0), rel=1e-7)
        assert row["speed"] == pytest.approx(np.linalg.norm(Ad) / np.sqrt(10), rel=1e-12)
        assert row["p"] == pytest.approx(rho[:l].sum(), rel=1e-12)
        W = m.W[l - 1].detach().numpy()
        np.testing.assert_allclose(ws[l - 1], np.linalg.svd(W[:, :-1], compute_uv=False),
                                   rtol=1e-10)
        np.testing.assert_allclose(rs[l - 1], np.linalg.svd(A1 - A1.mean(0),
                                                            compute_uv=False), rtol=1e-10)
        bal = (W ** 2).sum() - Lt * sum(rho[j] * (m.W[j][:, -1].detach().numpy() ** 2).sum()
                                        for j in range(l))
        assert row["balance"] == pytest.approx(bal, rel=1e-10)
    # B from autograd against the loss written out in NumPy (central differences on A_L)
    B = _momentum_fd(m, X.numpy(), Y.numpy(), lam)
    row = tab.iloc[-1]
    A0 = reps[-2]
    S0 = np.hstack([np.maximum(A0, 0), np.ones((10, 1))])
    hm = Lt / 2 * ((S0.T @ B) ** 2).sum() - Lt * (B * A0).sum()
    assert row["hamiltonian_momentum"] == pytest.approx(hm, rel=1e-6)


def _momentum_fd(m: bn.LeakyResNet, X: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    """B_L = -(1/lam) d/dA_L (1/N)||A_L V_out^T - Y||^2, by central differences."""
    AL = m.representations(torch.as_tensor(X))[-1].detach().numpy()
    V = m.out.detach().numpy()

    def fit(A: np.ndarray) -> float:
        return float(((A @ V.T - Y) ** 2).sum() / X.shape[0])

    G = np.zeros_like(AL)
    h = 1e-6
    for i in np.ndindex(AL.shape):
        E = np.zeros_like(AL)
        E[i] = h
        G[i] = (fit(AL + E) - fit(AL - E)) / (2 * h)
    return -G / lam


def test_analyze_of_a_leaky_resnet_has_the_columns(tmp_path):
    m = _net()
    X = torch.randn(10, 3, dtype=D, generator=torch.Generator().manual_seed(6))
    Y = torch.randn(10, 2, dtype=D, generator=torch.Generator().manual_seed(7))
    a = bn.analyze(m, X, Y=Y, lam=0.01)
    for col in ("coi", "coi_lower", "kinetic", "potential", "hamiltonian", "speed",
                "nonneg_gap", "w_s1", "in_bottleneck"):
        assert col in a.layers
    for key in ("hamiltonian_spread", "coi_min", "bottleneck_rank", "minus_2H_over_leak",
                "balance_spread", "rel_fit"):
        assert key in a.summary
    assert a.summary["implementation"] == "leaky-resnet" and "leaky ResNet" in repr(a)
    import json

    json.dumps(a.to_dict(), allow_nan=False)
    a.plot(tmp_path / "leaky.png")
    assert (tmp_path / "leaky.png").exists()


def _critical_point(depth: int) -> tuple[bn.LeakyResNet, torch.Tensor, torch.Tensor, float]:
    """A tiny leaky ResNet trained to a critical point in float64 (LBFGS, max |grad| <
    1e-8) in the region where every representation is positive: there the objective is
    smooth (no ReLU kink), so the critical point is one of the ReLU net's objective."""
    g = torch.Generator().manual_seed(0)
    X = 1 + torch.rand(12, 3, generator=g, dtype=D)
    Y = torch.tanh(X @ torch.randn(3, 2, generator=g, dtype=D))
    m = bn.LeakyResNet(3, 4, depth, 2, leak=3.0, seed=0, dtype=D)
    lam = 0.05
    with torch.no_grad():
        m.inp.abs_()
        for W in m.W:
            W[:, -1] = 1.0
    params = list(m.parameters())
    opt = torch.optim.LBFGS(params, lr=1, max_iter=3000, tolerance_grad=1e-13,
                            tolerance_change=0, history_size=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (m(X) - Y).pow(2).sum(1).mean() + lam * m.penalty_norm2()
        loss.backward()
        return loss

    opt.step(closure)
    closure()
    grad = max(float(p.grad.abs().max()) for p in params)
    assert grad < 1e-8, f"not a critical point: max |grad| {grad:.2e}"
    with torch.no_grad():
        assert min(float(A.min()) for A in m.representations(X)) > 0
    return m, X, Y, lam


def test_hamiltonian_identity_at_a_float64_critical_point():
    """THEORY 7 at a critical point: W_l = Lt B_l^T sigma(A_{l-1}), so the kinetic form of H
    equals the momentum form (the paper's, A >= 0 here, and the projected one) at every layer,
    to 1e-6 of the energies; H is constant along p up to the discretization: its spread
    halves when the layers double (first order in rho_l Lt; measured 0.109 at L = 10 and
    0.051 at L = 20), while COI = rank A = 1 exactly. gamma0 = 1e-12: the exact
    pseudo-inverse keeps round-off directions of the rank-1 sigma(A) (COI 3 instead of 1)."""
    spreads = []
    for L in (10, 20):
        m, X, Y, lam = _critical_point(L)
        tab, _, _ = leaky_table(m, X, Y=Y, lam=lam, gamma0=1e-12)
        scale = float(tab["potential"].abs().max())
        for form in ("hamiltonian_projected", "hamiltonian_momentum"):
            np.testing.assert_allclose(tab["hamiltonian"], tab[form], rtol=0,
                                       atol=1e-6 * scale)
        np.testing.assert_allclose(tab["coi"], 1.0, atol=1e-6)
        H = tab["hamiltonian"].to_numpy()
        spreads.append(H.max() - H.min())
        assert spreads[-1] < 0.25 * np.abs(H).mean()
    assert 0.4 < spreads[1] / spreads[0] < 0.6


@pytest.mark.parametrize("interrupt_at", [20])
def test_resume_equals_uninterrupted(tmp_path, interrupt_at):
    """A leaky run (adaptive steps, a minibatch stage next) interrupted mid-stage resumes to
    the same bits, its layer steps and optimizer state included."""
    task = teacher(24, 8, k=2, d_in=3, d_out=2, hidden=8, seed=0).to("cpu", torch.float32)
    stages = [Stage("adam", 2e-3, 1e-3, 30), Stage("adam", 1e-3, 1e-3, 20, batch_size=12)]

    def net(seed: int) -> bn.LeakyResNet:
        return bn.LeakyResNet(3, 4, 5, 2, leak=2.0, adapt_every=10, seed=seed)

    full = net(3)
    ref = bn.train(full, task, stages, seed=1, log_every=10, progress=False)

    def stop(step, row):
        if step == interrupt_at:
            raise KeyboardInterrupt

    ck = tmp_path / "ck"
    r1 = bn.train(net(3), task, stages, seed=1, log_every=10, checkpoint=ck,
                  checkpoint_every=10, callback=stop, progress=False)
    assert r1.status == "interrupted" and r1.steps == interrupt_at
    m2 = net(99)
    r2 = bn.train(m2, task, stages, seed=1, log_every=10, checkpoint=ck, checkpoint_every=10,
                  resume=True, progress=False)
    assert r2.status == "completed" and r2.steps == 50
    for (n, p), q in zip(m2.state_dict().items(), full.state_dict().values(), strict=True):
        assert torch.equal(p, q), n
    assert list(r2.history["layer_steps"]) == list(ref.history["layer_steps"])
