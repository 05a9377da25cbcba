import pytest
import torch
from cases import NET_CASES, build, case_id, rescale_neurons
from torch import nn

import bnstruct as bn
from bnstruct.testing import assert_close


def test_shapes_and_parameter_counts():
    m = bn.MLP(7, [5, 6], 3, 2)
    assert m.depth == 3 and m.sizes == [7, 5, 6, 2] and m.widths == [5, 6]
    assert [tuple(w.shape) for w in m.weights()] == [(5, 7), (6, 5), (2, 6)]
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == 5 * 7 + 5 + 6 * 5 + 6 + 2 * 6 + 2
    assert m(torch.zeros(4, 7)).shape == (4, 2)
    lin = bn.DeepLinear(4, 3, 5, 2)
    assert sum(p.numel() for p in lin.parameters()) == 4 * 3 + 3 * 3 * 3 + 3 * 2
    assert all(b is None for b in lin.biases())


def test_forward_matches_explicit_composition():
    m = build(NET_CASES[3])
    x = torch.randn(9, m.d_in, dtype=torch.float64)
    a = x
    for l, lin in enumerate(m.layers):
        a = a @ lin.weight.T + lin.bias
        if l < m.depth - 1:
            a = a.clamp_min(0)
    assert_close(m(x), a, rtol=1e-14, atol=1e-14, what="MLP forward")


def test_deep_linear_end_to_end_product():
    m = bn.DeepLinear(4, 3, 4, 2, seed=1, dtype=torch.float64)
    x = torch.randn(6, 4, dtype=torch.float64)
    assert_close(m(x), x @ m.end_to_end().T, rtol=1e-12, atol=1e-12, what="A x")


def test_init_is_seeded_and_bit_identical():
    a, b = bn.MLP(3, 8, 4, 2, seed=5), bn.MLP(3, 8, 4, 2, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = bn.MLP(3, 8, 4, 2, seed=6)
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)


def test_param_norm2_counts_weights_and_biases():
    m = build(NET_CASES[1])
    expect = sum(l.weight.pow(2).sum().item() + l.bias.pow(2).sum().item() for l in m.layers)
    assert_close(bn.param_norm2(m), expect, rtol=1e-14, atol=0, what="||theta||^2")


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("case", NET_CASES[1:], ids=case_id)
def test_rebalance_invariants(case, seed):
    m = build(case, seed)
    rescale_neurons(m, 1.0, seed)  # unbalance it on purpose
    x = torch.randn(50, m.d_in, dtype=torch.float64)
    f0, n0 = m(x).detach(), bn.param_norm2(m).item()
    bn.rebalance(m)
    f1, n1 = m(x).detach(), bn.param_norm2(m).item()
    assert_close(f1, f0, rtol=0, atol=1e-10 * float(f0.abs().max()), what="f after rebalance")
    assert n1 <= n0 * (1 + 1e-12)
    assert float(bn.balancedness(m).max()) <= 1e-8


def test_rebalance_reaches_the_convex_minimum():
    # The balanced point minimizes ||theta||^2 over all neuron rescalings: any further random
    # rescaling of the result has a norm at least as large.
    m = build(NET_CASES[3], 3)
    bn.rebalance(m)
    n_opt = bn.param_norm2(m).item()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    for trial in range(20):
        m.load_state_dict(state)
        rescale_neurons(m, 0.1, trial)
        assert bn.param_norm2(m).item() >= n_opt * (1 - 1e-12)
    m.load_state_dict(state)
    rescale_neurons(m, 0.5, 99)
    assert bn.param_norm2(m).item() > n_opt * (1 + 1e-6)  # the check can fail


def test_rebalance_on_sequential_and_dead_neurons():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[0].weight[1] = 0
        net[0].bias[1] = 0
    x = torch.randn(20, 3, dtype=torch.float64)
    f0 = net(x).detach()
    bn.rebalance(net)
    assert_close(net(x), f0, rtol=0, atol=1e-12, what="f after rebalance")
    assert net[2].weight[:, 1].abs().max().item() == 0.0


@pytest.mark.parametrize("act", [nn.Tanh(), nn.LayerNorm(4), nn.Sequential(nn.GELU())])
def test_rebalance_rejects_chains_it_would_change(act):
    net = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 2)).double()
    w = [p.detach().clone() for p in net.parameters()]
    name = type(act[0] if isinstance(act, nn.Sequential) else act).__name__
    with pytest.raises(bn.ConfigError, match=name):
        bn.rebalance(net)
    with pytest.raises(bn.ConfigError, match=name):
        bn.balancedness(net)
    assert all(torch.equal(a, b) for a, b in zip(w, net.parameters(), strict=True))


def test_bad_model_arguments():
    with pytest.raises(bn.ConfigError, match="depth"):
        bn.MLP(3, 4, 0, 2)
    with pytest.raises(bn.ConfigError, match="depth-1"):
        bn.MLP(3, [4, 4], 4, 2)
    with pytest.raises(bn.ConfigError, match="width"):
        bn.MLP(3, 0, 2, 2)


def test_public_api_resolves_lazily() -> None:
    """Every name of ``bnstruct.__all__`` resolves (the package loads them on first use)."""
    import bnstruct

    for name in bnstruct.__all__:
        assert getattr(bnstruct, name) is not None, name
    assert set(bnstruct.__all__) <= set(dir(bnstruct))
