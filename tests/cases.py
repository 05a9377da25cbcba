"""The registry of tiny float64 networks every diagnostic and invariant is tested on."""

from __future__ import annotations

import torch

import bnstruct as bn

# (d_in, width or widths, depth, d_out, bias)
NET_CASES = [
    (3, 4, 1, 2, True),
    (3, 5, 2, 2, True),
    (4, 6, 3, 3, False),
    (2, [5, 3, 4], 4, 3, True),
    (5, 4, 6, 1, True),
]


def case_id(c: tuple) -> str:
    return f"din{c[0]}-w{c[1]}-L{c[2]}-dout{c[3]}-b{int(c[4])}"


def build(case: tuple, seed: int = 0) -> bn.MLP:
    """A float64 MLP for ``case`` with nonzero biases (so bias code paths are exercised)."""
    d_in, width, depth, d_out, bias = case
    m = bn.MLP(d_in, width, depth, d_out, bias=bias, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        for lin in m.layers:
            if lin.bias is not None:
                lin.bias.copy_(0.3 * torch.randn(lin.bias.shape, generator=g,
                                                 dtype=torch.float64))
    return m


@torch.no_grad()
def rescale_neurons(m: torch.nn.Module, log_scale: float, seed: int) -> None:
    """Function-preserving random neuron rescaling (incoming * s, outgoing / s)."""
    g = torch.Generator().manual_seed(seed)
    layers = bn.models.linear_layers(m)
    for lin, nxt in zip(layers[:-1], layers[1:], strict=True):
        s = torch.exp(log_scale * torch.randn(lin.out_features, generator=g, dtype=torch.float64))
        lin.weight.mul_(s[:, None])
        if lin.bias is not None:
            lin.bias.mul_(s)
        nxt.weight.div_(s[None, :])
