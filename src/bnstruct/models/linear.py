"""Deep linear networks ``f(x) = W_L ... W_1 x``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._feedforward import FeedForward, widths

__all__ = ["DeepLinear"]


class DeepLinear(FeedForward):
    r"""Deep linear network :math:`f(x) = W_L \cdots W_1 x` (no biases, no nonlinearity).

    Init ``W ~ N(0, 1/fan_in)``. Same arguments as :class:`MLP` without ``bias``.
    """

    def __init__(self, d_in: int, width: int | Sequence[int], depth: int, d_out: int, *,
                 seed: int | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        super().__init__(widths(d_in, width, depth, d_out), False, "identity", 1.0, seed,
                         dtype, device)

    def end_to_end(self) -> torch.Tensor:
        """The product ``A = W_L ... W_1``, shape ``[d_out, d_in]``."""
        with torch.no_grad():
            first, *rest = self.linears
            A = first.weight
            for lin in rest:
                A = lin.weight @ A
            return A.clone()
