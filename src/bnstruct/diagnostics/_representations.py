r"""Hidden representations recorded by forward hooks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ._chain import check_X, parse_chain

__all__ = ["representations"]


@torch.no_grad()
def representations(model: nn.Module, X: torch.Tensor, *, pre: bool = False
                    ) -> list[torch.Tensor]:
    r"""Representation of every layer, recorded by forward hooks during ``model(X)``.

    Returns ``L`` tensors; entry ``l-1`` (layer ``l = 1..L``) has shape ``[N, n_l]``:

    - ``pre=False`` (default): what layer ``l`` hands on, :math:`a_\ell = \sigma(z_\ell)` for
      ``l < L`` (the input of the next ``nn.Linear``, so whatever activations sit in between
      are applied) and the network output :math:`f(x)` for ``l = L``;
    - ``pre=True``: the pre-activations :math:`z_\ell = W_\ell a_{\ell-1} + b_\ell`.

    Computed in the model's own dtype and device (``X`` is cast to them). Works for
    :class:`bnstruct.MLP`, :class:`bnstruct.DeepLinear` and ``nn.Sequential`` chains of
    Linear / ReLU / LeakyReLU / Identity; any other module raises a ``ConfigError`` naming it.
    """
    chain = parse_chain(model, dtype=None)
    p = next(model.parameters())
    X = check_X(X, chain.d_in, p.dtype, p.device)
    modules = dict(model.named_modules())
    ins: dict[int, list[torch.Tensor]] = {i: [] for i in range(chain.depth)}
    outs: dict[int, list[torch.Tensor]] = {i: [] for i in range(chain.depth)}
    handles = []

    def hook(i: int) -> Any:
        def h(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            ins[i].append(args[0].detach())
            outs[i].append(out.detach())
        return h

    try:
        for i, name in enumerate(chain.names):
            handles.append(modules[name].register_forward_hook(hook(i)))
        y = model(X)
    finally:
        for hd in handles:
            hd.remove()
    for i, name in enumerate(chain.names):
        if len(ins[i]) != 1:
            raise ConfigError(f"layer {name!r} ran {len(ins[i])} times in one forward pass: "
                              "shared layers are not supported")
    if pre:
        return [outs[i][0] for i in range(chain.depth)]
    return [ins[i][0] for i in range(1, chain.depth)] + [y.detach()]
