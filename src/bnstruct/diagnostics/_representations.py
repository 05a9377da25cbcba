r"""Hidden representations of a chain, from the one stored forward pass."""

from __future__ import annotations

import torch
from torch import nn

from ._evaluation import Evaluation

__all__ = ["representations"]


def representations(model: nn.Module, X: torch.Tensor, *, pre: bool = False,
                    dtype: torch.dtype | None = torch.float64) -> list[torch.Tensor]:
    r"""Representation of every layer of a chain on the points ``X`` (``[N, d_in]``).

    Returns ``L`` tensors; entry ``l-1`` (layer ``l = 1..L``) has shape ``[N, n_l]``:

    - ``pre=False`` (default): what layer ``l`` hands on, :math:`a_\ell = \sigma(z_\ell)` for
      ``l < L`` (the input of the next ``nn.Linear``, so whatever activations sit in between
      are applied) and the network output :math:`f(x)` for ``l = L``;
    - ``pre=True``: the pre-activations :math:`z_\ell = W_\ell a_{\ell-1} + b_\ell`.

    Computed, like every measurement, in the compute dtype ``dtype`` (float64 default) from
    the chain cast to it (``None``: the model's own dtype), with eval-mode semantics (Dropout
    is the identity). Works for :class:`bnstruct.MLP`, :class:`bnstruct.DeepLinear` and nested
    ``nn.Sequential`` chains of Linear / ReLU / LeakyReLU / Identity / Dropout; any other
    module raises a ``ConfigError`` naming it.
    """
    ev = Evaluation(model, X, dtype=dtype)
    ev.require_chain()
    return ev.representations(pre)
