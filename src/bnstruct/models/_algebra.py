r"""The parameter algebra of feed-forward chains: norm, balancedness, rebalancing.

Conventions (docs/theory.md#objects): depth ``L`` is the number of weight matrices,

.. math::

    a_0 = x, \quad z_\ell = W_\ell a_{\ell-1} + b_\ell, \quad a_\ell = \mathrm{relu}(z_\ell)
    \ (\ell < L), \quad f(x) = z_L,

and :math:`\|\theta\|^2 = \sum_\ell \|W_\ell\|_F^2 + \|b_\ell\|^2` (biases included).
Weights use PyTorch's ``nn.Linear`` layout: ``W_l`` has shape ``[n_l, n_{l-1}]``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ._trace import CHAIN_MODULES, LinearChain, linear_chain

__all__ = ["param_norm2", "rebalance", "balancedness", "linear_layers", "LinearChain",
           "linear_chain", "balance_residuals", "CHAIN_MODULES"]

def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of a chain (:func:`linear_chain`), in order."""
    return list(linear_chain(model).linears)


def param_norm2(model: nn.Module) -> torch.Tensor:
    r""":math:`\|\theta\|^2 = \sum_p \|p\|^2` over all parameters (weights and biases).

    Returns a 0-d tensor (differentiable)."""
    params = list(model.parameters())
    if not params:
        raise ConfigError(f"{type(model).__name__} has no parameters")
    return torch.stack([p.pow(2).sum() for p in params]).sum()


def balance_residuals(weights: list[torch.Tensor], biases: list[torch.Tensor | None]
                      ) -> torch.Tensor:
    r"""Relative balancedness residual per hidden layer, shape ``[L-1]`` (see
    :func:`balancedness`), from the weights ``W_l`` (``[n_l, n_{l-1}]``) and biases."""
    res = []
    for W, b, nxt in zip(weights[:-1], biases[:-1], weights[1:], strict=True):
        a = W.pow(2).sum(1)
        if b is not None:
            a = a + b.pow(2)
        c = nxt.pow(2).sum(0)
        res.append((a - c).abs().sum() / (a + c).sum().clamp_min(torch.finfo(a.dtype).tiny))
    if not res:
        return torch.zeros(0, dtype=weights[0].dtype, device=weights[0].device)
    return torch.stack(res)


@torch.no_grad()
def balancedness(model: nn.Module) -> torch.Tensor:
    r"""Relative balancedness residual per hidden layer, shape ``[L-1]``.

    For hidden layer ``l`` with incoming norms :math:`A_i = \|W_\ell[i,:]\|^2 + b_\ell[i]^2`
    and outgoing norms :math:`B_i = \|W_{\ell+1}[:,i]\|^2`, returns
    :math:`\|A - B\|_1 / \|A + B\|_1` (0 when balanced; every critical point of the
    L2-regularized loss is balanced, docs/theory.md#bottleneck-inequality). Accepts the chains of
    :func:`linear_chain`."""
    layers = linear_layers(model)
    return balance_residuals([m.weight for m in layers], [m.bias for m in layers])


@torch.no_grad()
def rebalance(model: nn.Module, *, tol: float | None = None, max_sweeps: int = 100_000) -> int:
    r"""Rescale neurons to balance the network in place, without changing the function.

    Positive homogeneity of ReLU: multiplying neuron ``i`` of layer ``l``'s incoming weights and
    bias by :math:`e^{u}` and its outgoing weights by :math:`e^{-u}` leaves ``f`` unchanged.
    The norm is convex in the log-scales; each neuron's coordinate minimum of
    :math:`A e^{2u} + B e^{-2u}` is :math:`e^{4u} = B/A`, i.e. it makes ``A = B = sqrt(AB)``.
    Coordinate descent over layers (alternating odd/even layers, each a block update) converges
    to the balanced point; :func:`param_norm2` never increases.

    Neurons with zero incoming or outgoing weights are set to zero (this keeps ``f``: a dead
    path contributes nothing, and it can only lower the norm). Works for ReLU/leaky-ReLU/linear
    chains (all positively homogeneous). Stops when every neuron's relative imbalance
    ``|A-B|/(A+B)`` is below ``tol`` (default: 1e-14 in float64, 1e-6 in float32).
    Returns the number of sweeps.
    """
    layers = linear_layers(model)
    if tol is None:
        tol = 1e-14 if layers[0].weight.dtype == torch.float64 else 1e-6
    if len(layers) < 2:
        return 0
    for sweep in range(1, max_sweeps + 1):
        worst = 0.0
        for parity in (0, 1):
            for l in range(parity, len(layers) - 1, 2):
                lin, nxt = layers[l], layers[l + 1]
                a = lin.weight.pow(2).sum(1)
                if lin.bias is not None:
                    a = a + lin.bias.pow(2)
                b = nxt.weight.pow(2).sum(0)
                dead = (a == 0) | (b == 0)
                scale = torch.where(dead, torch.zeros_like(a),
                                    (b / a.where(~dead, torch.ones_like(a))).pow(0.25))
                lin.weight.mul_(scale[:, None])
                if lin.bias is not None:
                    lin.bias.mul_(scale)
                inv = torch.where(dead, torch.zeros_like(scale), 1.0 / scale.where(~dead,
                                  torch.ones_like(scale)))
                nxt.weight.mul_(inv[None, :])
                rel = ((a - b).abs() / (a + b).clamp_min(torch.finfo(a.dtype).tiny)).max()
                worst = max(worst, float(rel))
        if worst <= tol:
            return sweep
    return max_sweeps
