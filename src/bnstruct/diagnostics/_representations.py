r"""Hidden representations: a chain's from its one stored forward pass, any other model's by
forward hooks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._evaluation import Evaluation

__all__ = ["representations"]


def representations(model: nn.Module, X: torch.Tensor, *, pre: bool = False,
                    dtype: torch.dtype | None = torch.float64,
                    layers: Sequence[str] | None = None,
                    output: int | str | Callable[[Any], torch.Tensor] | None = None
                    ) -> list[torch.Tensor]:
    r"""Representation of every layer of a network on the points ``X`` (``[N, ...]``).

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

    Any other model (or ``layers=[...]`` given): the outputs of every activation module and
    every block (a module of the user's own class), then ``f(X)``, or of the named modules
    only (:mod:`bnstruct.diagnostics._general`), recorded by forward hooks with the model in
    eval mode (the user's mode restored), in the compute dtype, each ``[N, *shape]``.
    ``output`` selects the tensor of a model returning a tuple or dict.
    """
    ev = Evaluation(model, X, dtype=dtype, layers=layers, output=output)
    return ev.representations(pre)
