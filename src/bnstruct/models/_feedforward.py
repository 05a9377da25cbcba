"""The feed-forward chain every bnstruct model family builds on."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from .._checks import check_memory, integer
from .._checks import seed as check_seed
from ..errors import ConfigError

__all__ = ["FeedForward", "ACTIVATIONS", "widths"]

#: activations a :class:`FeedForward` can apply between its layers
ACTIVATIONS = ("relu", "identity")


def widths(d_in: int, width: int | Sequence[int], depth: int, d_out: int) -> list[int]:
    """The layer sizes ``[d_in, n_1, ..., n_{L-1}, d_out]`` (strictly checked: integers
    only, no ``bool``, ``str`` or ``float``; the parameters must fit in memory)."""
    for name, v in (("d_in", d_in), ("d_out", d_out), ("depth", depth)):
        integer(name, v, low=1)
    if isinstance(width, int | bool | float | str):
        hidden = [integer("width", width, low=1)] * (depth - 1)
    else:
        hidden = [integer("width", w, low=1) for w in width]
        if len(hidden) != depth - 1:
            raise ConfigError(
                f"width list has {len(hidden)} entries; depth {depth} needs depth-1 = {depth - 1}"
            )
    sizes = [d_in, *hidden, d_out]
    check_memory("the network", sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:],
                                                                strict=True)), 4)
    return sizes


class FeedForward(nn.Module):
    """A chain of ``nn.Linear`` layers with one elementwise activation between them.

    ``activation`` names it (``"relu"`` or ``"identity"``); the diagnostics read it to build
    their chain view, so a new family only sets a different value (and registers a builder in
    :data:`bnstruct.models.MODELS`)."""

    def __init__(self, sizes: list[int], bias: bool, activation: str, gain: float,
                 seed: int | None,
                 dtype: torch.dtype | None, device: torch.device | str | None):
        super().__init__()
        self.sizes = list(sizes)
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias, dtype=dtype, device=device)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.gain = float(gain)
        self.reset_parameters(seed)

    @property
    def linears(self) -> list[nn.Linear]:
        """The ``nn.Linear`` layers ``[layer_1, ..., layer_L]`` (typed view of ``layers``)."""
        return [cast(nn.Linear, m) for m in self.layers]

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
            gen = torch.Generator(device="cpu").manual_seed(check_seed("seed", seed))
        for lin in self.linears:
            w = torch.randn(lin.weight.shape, generator=gen, dtype=torch.float64)
            lin.weight.copy_(w * math.sqrt(self.gain / lin.in_features))
            if lin.bias is not None:
                lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[N, d_in]`` -> ``[N, d_out]``."""
        *hidden, last = self.linears
        for lin in hidden:
            x = lin(x)
            if self.activation == "relu":
                x = torch.relu(x)
        return last(x)

    def weights(self) -> list[torch.Tensor]:
        """``[W_1, ..., W_L]`` (live parameters, shapes ``[n_l, n_{l-1}]``)."""
        return [lin.weight for lin in self.linears]

    def biases(self) -> list[torch.Tensor | None]:
        return [lin.bias for lin in self.linears]

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"
