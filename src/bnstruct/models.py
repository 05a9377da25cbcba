r"""Networks and their parameter algebra.

Conventions (THEORY section 1): depth ``L`` is the number of weight matrices,

.. math::

    a_0 = x, \quad z_\ell = W_\ell a_{\ell-1} + b_\ell, \quad a_\ell = \mathrm{relu}(z_\ell)
    \ (\ell < L), \quad f(x) = z_L,

and :math:`\|\theta\|^2 = \sum_\ell \|W_\ell\|_F^2 + \|b_\ell\|^2` (biases included).
Weights use PyTorch's ``nn.Linear`` layout: ``W_l`` has shape ``[n_l, n_{l-1}]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["MLP", "DeepLinear", "param_norm2", "rebalance", "balancedness", "linear_layers"]


def _widths(d_in: int, width: int | Sequence[int], depth: int, d_out: int) -> list[int]:
    for name, v in (("d_in", d_in), ("d_out", d_out), ("depth", depth)):
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(width, int):
        if width < 1:
            raise ConfigError(f"width must be >= 1, got {width}")
        hidden = [width] * (depth - 1)
    else:
        hidden = [int(w) for w in width]
        if len(hidden) != depth - 1:
            raise ConfigError(
                f"width list has {len(hidden)} entries; depth {depth} needs depth-1 = {depth - 1}"
            )
        if any(w < 1 for w in hidden):
            raise ConfigError(f"every hidden width must be >= 1, got {hidden}")
    return [d_in, *hidden, d_out]


class _Chain(nn.Module):
    """A chain of ``nn.Linear`` layers with an elementwise nonlinearity in between."""

    def __init__(self, sizes: list[int], bias: bool, relu: bool, gain: float, seed: int | None,
                 dtype: torch.dtype | None, device: torch.device | str | None):
        super().__init__()
        self.sizes = list(sizes)
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias, dtype=dtype, device=device)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self._relu = relu
        self.gain = float(gain)
        self.reset_parameters(seed)

    @property
    def depth(self) -> int:
        """Number of weight matrices ``L``."""
        return len(self.layers)

    @property
    def d_in(self) -> int:
        return self.sizes[0]

    @property
    def d_out(self) -> int:
        return self.sizes[-1]

    @property
    def widths(self) -> list[int]:
        """Hidden widths ``n_1 .. n_{L-1}``."""
        return self.sizes[1:-1]

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        r"""Gaussian init ``W ~ N(0, gain / fan_in)``, zero biases (He init for ReLU: gain 2).

        ``seed`` makes the init independent of the global RNG (bit-identical across calls).
        """
        gen = None
        if seed is not None:
            gen = torch.Generator(device="cpu").manual_seed(int(seed))
        for lin in self.layers:
            w = torch.randn(lin.weight.shape, generator=gen, dtype=torch.float64)
            lin.weight.copy_(w * math.sqrt(self.gain / lin.in_features))
            if lin.bias is not None:
                lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[N, d_in]`` -> ``[N, d_out]``."""
        *hidden, last = self.layers
        for lin in hidden:
            x = lin(x)
            if self._relu:
                x = torch.relu(x)
        return last(x)

    def weights(self) -> list[torch.Tensor]:
        """``[W_1, ..., W_L]`` (live parameters, shapes ``[n_l, n_{l-1}]``)."""
        return [lin.weight for lin in self.layers]

    def biases(self) -> list[torch.Tensor | None]:
        return [lin.bias for lin in self.layers]

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"


class MLP(_Chain):
    r"""Fully connected ReLU network of depth ``L`` (= number of weight matrices).

    Args:
        d_in: input dimension.
        width: hidden width (int) or the list of the ``L-1`` hidden widths.
        depth: ``L >= 1``; ``depth=1`` is an affine map.
        d_out: output dimension.
        bias: include biases (they count in :func:`param_norm2`).
        seed: seed of the He init (``W ~ N(0, 2/fan_in)``, ``b = 0``); ``None`` uses the
            global RNG.
        dtype, device: as for ``nn.Linear``.

    Shapes: ``forward`` maps ``[N, d_in] -> [N, d_out]``.
    """

    def __init__(self, d_in: int, width: int | Sequence[int], depth: int, d_out: int, *,
                 bias: bool = True, seed: int | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        super().__init__(_widths(d_in, width, depth, d_out), bias, True, 2.0, seed, dtype, device)


class DeepLinear(_Chain):
    r"""Deep linear network :math:`f(x) = W_L \cdots W_1 x` (no biases, no nonlinearity).

    Init ``W ~ N(0, 1/fan_in)``. Same arguments as :class:`MLP` without ``bias``.
    """

    def __init__(self, d_in: int, width: int | Sequence[int], depth: int, d_out: int, *,
                 seed: int | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        super().__init__(_widths(d_in, width, depth, d_out), False, False, 1.0, seed, dtype,
                         device)

    def end_to_end(self) -> torch.Tensor:
        """The product ``A = W_L ... W_1``, shape ``[d_out, d_in]``."""
        with torch.no_grad():
            A = self.layers[0].weight
            for lin in self.layers[1:]:
                A = lin.weight @ A
            return A.clone()


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of a bnstruct model or of an ``nn.Sequential`` chain, in order.

    A chain may hold only ``Linear``, ``ReLU``, ``LeakyReLU`` and ``Identity`` (positively
    homogeneous activations: what :func:`rebalance` needs to leave ``f`` unchanged); any other
    module raises :class:`ConfigError` naming it."""
    if isinstance(model, _Chain):
        return list(model.layers)
    if isinstance(model, nn.Sequential):
        for i, m in enumerate(model):
            if not isinstance(m, nn.Linear | nn.ReLU | nn.LeakyReLU | nn.Identity):
                raise ConfigError(
                    f"module {i} ({type(m).__name__}) of the nn.Sequential is not supported: "
                    "use Linear, ReLU, LeakyReLU or Identity (positively homogeneous)")
        return [m for m in model if isinstance(m, nn.Linear)]
    raise ConfigError(
        f"{type(model).__name__} is not supported: use bnstruct.MLP, bnstruct.DeepLinear or an "
        "nn.Sequential of Linear and ReLU layers"
    )


def param_norm2(model: nn.Module) -> torch.Tensor:
    r""":math:`\|\theta\|^2 = \sum_p \|p\|^2` over all parameters (weights and biases).

    Returns a 0-d tensor (differentiable)."""
    params = list(model.parameters())
    if not params:
        raise ConfigError(f"{type(model).__name__} has no parameters")
    return torch.stack([p.pow(2).sum() for p in params]).sum()


def _neuron_norms(layers: list[nn.Linear]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per neuron: in ``||W_l[i,:]||^2 + b_l[i]^2``, out ``||W_{l+1}[:,i]||^2``."""
    ins, outs = [], []
    for lin, nxt in zip(layers[:-1], layers[1:], strict=True):
        a = lin.weight.pow(2).sum(1)
        if lin.bias is not None:
            a = a + lin.bias.pow(2)
        ins.append(a)
        outs.append(nxt.weight.pow(2).sum(0))
    return ins, outs


@torch.no_grad()
def balancedness(model: nn.Module) -> torch.Tensor:
    r"""Relative balancedness residual per hidden layer, shape ``[L-1]``.

    For hidden layer ``l`` with incoming norms :math:`A_i = \|W_\ell[i,:]\|^2 + b_\ell[i]^2`
    and outgoing norms :math:`B_i = \|W_{\ell+1}[:,i]\|^2`, returns
    :math:`\|A - B\|_1 / \|A + B\|_1` (0 when balanced; every critical point of the
    L2-regularized loss is balanced, THEORY section 3)."""
    ins, outs = _neuron_norms(linear_layers(model))
    res = [(a - b).abs().sum() / (a + b).sum().clamp_min(torch.finfo(a.dtype).tiny)
           for a, b in zip(ins, outs, strict=True)]
    if not res:
        return torch.zeros(0)
    return torch.stack(res)


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
        ins, outs = _neuron_norms(layers)
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
        del ins, outs
        if worst <= tol:
            return sweep
    return max_sweeps
