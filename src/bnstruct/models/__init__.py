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

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch

from ..errors import ConfigError
from ._algebra import balancedness, linear_layers, param_norm2, rebalance
from ._feedforward import ACTIVATIONS, FeedForward
from ._trace import LinearChain, linear_chain
from .leaky import LeakyResNet
from .linear import DeepLinear
from .mlp import MLP

__all__ = ["MLP", "DeepLinear", "LeakyResNet", "FeedForward", "ACTIVATIONS", "MODELS",
           "ModelBuilder", "FAMILY_OPTIONS", "register_model", "build_model", "param_norm2",
           "rebalance", "balancedness", "linear_layers", "linear_chain", "LinearChain"]


class ModelBuilder(Protocol):
    """``builder(d_in, width, depth, d_out, *, bias, seed, dtype, device, options) ->
    nn.Module``; ``options`` are the family's own settings (``leaky-resnet``: ``leak``,
    ``adapt_every``), empty for the others."""

    def __call__(self, d_in: int, width: int | Sequence[int], depth: int, d_out: int, *,
                 bias: bool, seed: int | None, dtype: torch.dtype | None,
                 device: torch.device | str | None,
                 options: Mapping[str, Any]) -> torch.nn.Module: ...


#: each family's own options (``ModelSpec`` fields that only it takes)
FAMILY_OPTIONS: dict[str, tuple[str, ...]] = {"mlp": (), "linear": (),
                                              "leaky-resnet": ("leak", "adapt_every")}


def _no_options(kind: str, options: Mapping[str, Any]) -> None:
    if options:
        raise ConfigError(f"model kind {kind!r} takes no option(s) {sorted(options)}")


def _mlp(d_in: int, width: int | Sequence[int], depth: int, d_out: int, *, bias: bool,
         seed: int | None, dtype: torch.dtype | None,
         device: torch.device | str | None, options: Mapping[str, Any]) -> FeedForward:
    _no_options("mlp", options)
    return MLP(d_in, width, depth, d_out, bias=bias, seed=seed, dtype=dtype, device=device)


def _linear(d_in: int, width: int | Sequence[int], depth: int, d_out: int, *, bias: bool,
            seed: int | None, dtype: torch.dtype | None,
            device: torch.device | str | None, options: Mapping[str, Any]) -> FeedForward:
    _no_options("linear", options)
    if bias:
        raise ConfigError("model kind 'linear' (DeepLinear) has no biases: set bias=False")
    return DeepLinear(d_in, width, depth, d_out, seed=seed, dtype=dtype, device=device)


def _leaky(d_in: int, width: int | Sequence[int], depth: int, d_out: int, *, bias: bool,
           seed: int | None, dtype: torch.dtype | None,
           device: torch.device | str | None, options: Mapping[str, Any]) -> LeakyResNet:
    if not isinstance(width, int):
        raise ConfigError("a leaky ResNet has one inner width: give width as one integer")
    if not bias:
        raise ConfigError("a leaky ResNet's layers always have biases (the last column of "
                          "W_l): leave bias=True")
    bad = sorted(set(options) - {"leak", "adapt_every"})
    if bad:
        raise ConfigError(f"model kind 'leaky-resnet' has no option(s) {bad}")
    if options.get("leak") is None:
        raise ConfigError("model kind 'leaky-resnet' needs leak (the effective depth Lt), "
                          "e.g. --leak 4")
    return LeakyResNet(d_in, width, depth, d_out, leak=options["leak"],
                       adapt_every=options.get("adapt_every"), seed=seed, dtype=dtype,
                       device=device)


#: model families by ``kind`` (the ``--model`` option and ``ModelSpec.kind``)
MODELS: dict[str, ModelBuilder] = {"mlp": _mlp, "linear": _linear, "leaky-resnet": _leaky}


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
                device: torch.device | str | None = None,
                options: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """Build a network of family ``kind`` (a key of :data:`MODELS`); ``options``: the
    family's own settings (:data:`FAMILY_OPTIONS`)."""
    if kind not in MODELS:
        raise ConfigError(f"unknown model {kind!r}: choose one of {', '.join(MODELS)}")
    return MODELS[kind](d_in, width, depth, d_out, bias=bias, seed=seed, dtype=dtype,
                        device=device, options=dict(options or {}))
