r"""Networks, their registry and their parameter algebra.

Conventions (docs/theory.md#objects): depth ``L`` is the number of weight matrices,

.. math::

    a_0 = x, \quad z_\ell = W_\ell a_{\ell-1} + b_\ell, \quad a_\ell = \sigma(z_\ell)
    \ (\ell < L), \quad f(x) = z_L,

and :math:`\|\theta\|^2 = \sum_\ell \|W_\ell\|_F^2 + \|b_\ell\|^2` (biases included).
Weights use PyTorch's ``nn.Linear`` layout: ``W_l`` has shape ``[n_l, n_{l-1}]``.

Model families are registered in :data:`MODELS` (``kind -> builder``), as tasks are in
:data:`bnstruct.tasks.TASKS`: a run configuration names its family by ``kind``, and a new
family is one new module plus one :func:`register_model` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from ..errors import ConfigError
from ._algebra import balancedness, linear_layers, param_norm2, rebalance
from ._feedforward import ACTIVATIONS, FeedForward
from ._trace import LinearChain, linear_chain
from .linear import DeepLinear
from .mlp import MLP

__all__ = ["MLP", "DeepLinear", "FeedForward", "ACTIVATIONS", "MODELS", "ModelBuilder",
           "register_model", "build_model", "param_norm2", "rebalance", "balancedness",
           "linear_layers", "linear_chain", "LinearChain"]


class ModelBuilder(Protocol):
    """``builder(d_in, width, depth, d_out, *, bias, seed, dtype, device) -> FeedForward``."""

    def __call__(self, d_in: int, width: int | Sequence[int], depth: int, d_out: int, *,
                 bias: bool, seed: int | None, dtype: torch.dtype | None,
                 device: torch.device | str | None) -> FeedForward: ...


def _mlp(d_in: int, width: int | Sequence[int], depth: int, d_out: int, *, bias: bool,
         seed: int | None, dtype: torch.dtype | None,
         device: torch.device | str | None) -> FeedForward:
    return MLP(d_in, width, depth, d_out, bias=bias, seed=seed, dtype=dtype, device=device)


def _linear(d_in: int, width: int | Sequence[int], depth: int, d_out: int, *, bias: bool,
            seed: int | None, dtype: torch.dtype | None,
            device: torch.device | str | None) -> FeedForward:
    if bias:
        raise ConfigError("model kind 'linear' (DeepLinear) has no biases: set bias=False")
    return DeepLinear(d_in, width, depth, d_out, seed=seed, dtype=dtype, device=device)


#: model families by ``kind`` (the ``--model`` option and ``ModelSpec.kind``)
MODELS: dict[str, ModelBuilder] = {"mlp": _mlp, "linear": _linear}


def register_model(kind: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering a builder under ``kind`` in :data:`MODELS`."""

    def deco(fn: ModelBuilder) -> ModelBuilder:
        if kind in MODELS:
            raise ConfigError(f"model kind {kind!r} is already registered")
        MODELS[kind] = fn
        return fn

    return deco


def build_model(kind: str, d_in: int, width: int | Sequence[int], depth: int, d_out: int, *,
                bias: bool = True, seed: int | None = None, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> FeedForward:
    """Build a network of family ``kind`` (a key of :data:`MODELS`)."""
    if kind not in MODELS:
        raise ConfigError(f"unknown model {kind!r}: choose one of {', '.join(MODELS)}")
    return MODELS[kind](d_in, width, depth, d_out, bias=bias, seed=seed, dtype=dtype,
                        device=device)
