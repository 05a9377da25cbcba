"""Fully connected ReLU networks (He init)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._feedforward import FeedForward, widths

__all__ = ["MLP"]


class MLP(FeedForward):
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
        super().__init__(widths(d_in, width, depth, d_out), bias, "relu", 2.0, seed, dtype,
                         device)
