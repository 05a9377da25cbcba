r"""Leaky ResNets (Jacot & Kaiser, arXiv 2405.17573; docs/theory.md#leaky-resnets).

Width ``w`` constant inside, a linear map ``d_in -> w`` in and ``w -> d_out`` out, and ``L``
leaky residual layers with layer steps :math:`\rho_\ell > 0`, :math:`\sum_\ell \rho_\ell = 1`,
:math:`\rho_\ell \tilde L < 1` (``leak`` is the effective depth :math:`\tilde L`):

.. math::

    A_0 = V_{in} x, \qquad
    A_\ell = (1 - \rho_\ell \tilde L) A_{\ell-1} + \rho_\ell W_\ell \sigma(A_{\ell-1}),
    \qquad f(x) = V_{out} A_L,

with :math:`\sigma(z) = (\mathrm{relu}(z), 1)`: ``W_l`` is ``[w, w+1]``, its last column the
bias. It discretizes :math:`\partial_p A = -\tilde L A + W_p \sigma(A_p)` on ``p in [0, 1]``
(layer ``l`` sits at :math:`p_\ell = \rho_1 + \dots + \rho_\ell`). ``leak -> 0`` is a plain
ResNet, :math:`\rho_\ell \tilde L \to 1` a fully connected ReLU net.

Orientation: the package's, points in rows: ``A_l`` is ``[N, w]`` (the paper's ``w x N``
transposed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import check_memory, integer, number
from .._checks import seed as check_seed
from ..errors import ConfigError

__all__ = ["LeakyResNet", "check_steps", "STEP_MARGIN"]

#: adaptive steps keep :math:`\rho_\ell \tilde L \le 1 - ` this margin (the rule of THEORY 7.6
#: may ask for more than the leak allows)
STEP_MARGIN = 0.05


def check_steps(steps: Any, depth: int, leak: float) -> torch.Tensor:
    """The layer steps as a float64 CPU tensor ``[L]``: positive, summing to 1 (to 1e-9),
    :math:`\\rho_\\ell \\tilde L < 1`; one-line :class:`ConfigError` otherwise."""
    try:
        t = torch.as_tensor(steps, dtype=torch.float64).detach().cpu().reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"steps must be a list of {depth} positive numbers, got "
                          f"{steps!r}") from None
    if t.numel() != depth:
        raise ConfigError(f"steps has {t.numel()} entries; depth {depth} needs {depth}")
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ConfigError("every layer step rho_l must be a positive finite number")
    if abs(float(t.sum()) - 1.0) > 1e-9:
        raise ConfigError(f"the layer steps must sum to 1, they sum to {float(t.sum()):.12g}")
    if leak > 0 and not bool((t * leak < 1).all()):
        l = int(torch.argmax(t))
        raise ConfigError(f"rho_l * leak must be < 1 for every layer: layer {l + 1} has "
                          f"{float(t[l]):.4g} * {leak:g} = {float(t[l] * leak):.4g}; use more "
                          "layers or a smaller leak")
    return t


class LeakyResNet(nn.Module):
    r"""Leaky ResNet of ``depth`` residual layers of width ``width`` (module docstring).

    Args:
        d_in, d_out: input and output dimensions.
        width: the inner width ``w``.
        depth: the number ``L`` of leaky layers (``W_1..W_L``; the in and out maps are extra).
        leak: the effective depth :math:`\tilde L > 0`.
        steps: the layer steps :math:`\rho_\ell` (``None``: equal, ``1/L``), validated.
        adapt_every: re-set the steps every this many training steps by the rule of THEORY
            7.6 (:meth:`adapt_steps`); ``None``: fixed steps.
        seed: seed of the init; ``None`` uses the global RNG.
        dtype, device: of the parameters.

    Init: :math:`V_{in} \sim N(0, 1/d_{in})`, :math:`V_{out} \sim N(0, 1/w)`, and the relu
    part of ``W_l`` is :math:`\tilde L` times a He init :math:`N(0, 2/w)` (so each layer
    is a convex mixture of its input and a He-initialized ReLU layer's output; at
    :math:`\rho\tilde L = 1` exactly a He-initialized MLP), biases 0.

    **Objective and penalty weights.** The paper's objective is

    .. math::

        \frac1N \|f^*(X) - f(X)\|_F^2 + \frac{\lambda}{2\tilde L}\sum_\ell \rho_\ell
        \|W_\ell\|_F^2 ,

    where the MLPs' is :math:`\frac1N\|f^*(X) - f(X)\|_F^2 + \lambda\|\theta\|^2`
    (PyTorch ``weight_decay = 2 lam``). bnstruct trains a leaky ResNet on
    :math:`\frac1N\|\cdot\|^2 + \lambda\sum_q c_q \|\theta_q\|^2` with the per-parameter
    weights :meth:`penalty_weights`: :math:`c = \rho_\ell / (2\tilde L)` for ``W_l`` (bias
    column included), exactly the paper's, so a stage's ``lam`` is the paper's
    :math:`\lambda` (coupled decay ``2 lam c_q`` per parameter). The in and out maps, which
    the paper's formula leaves out, are penalized as one unit of depth each,
    :math:`c = 1/(2\tilde L)` (the weight of all ``L`` layers together): unpenalized, the
    scaling :math:`A \to tA`, bias :math:`\to t\cdot` bias, :math:`V_{out} \to V_{out}/t`
    would let the biases' penalty shrink to 0 with no minimizer. They have no biases (the
    data are centered).

    Shapes: ``forward`` maps ``[N, d_in] -> [N, d_out]``; :meth:`representations` gives
    ``A_0 .. A_L``, each ``[N, w]``.
    """

    steps: torch.Tensor

    def __init__(self, d_in: int, width: int, depth: int, d_out: int, *, leak: float,
                 steps: Sequence[float] | torch.Tensor | None = None,
                 adapt_every: int | None = None, seed: int | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        for name, v in (("d_in", d_in), ("width", width), ("depth", depth), ("d_out", d_out)):
            integer(name, v, low=1)
        number("leak", leak, positive=True)
        if adapt_every is not None:
            integer("adapt_every", adapt_every, low=1)
        check_memory("the network", depth * width * (width + 1) + width * (d_in + d_out), 4)
        rho = check_steps(torch.full((depth,), 1.0 / depth, dtype=torch.float64)
                          if steps is None else steps, depth, float(leak))
        self.d_in, self.width, self.d_out, self.leak = d_in, width, d_out, float(leak)
        self.adapt_every = adapt_every
        self.inp = nn.Parameter(torch.empty(width, d_in, dtype=dtype, device=device))
        self.W = nn.ParameterList(nn.Parameter(torch.empty(width, width + 1, dtype=dtype,
                                                           device=device))
                                  for _ in range(depth))
        self.out = nn.Parameter(torch.empty(d_out, width, dtype=dtype, device=device))
        self.register_buffer("steps", rho.to(dtype=self.inp.dtype, device=self.inp.device))
        self.reset_parameters(seed)

    @property
    def depth(self) -> int:
        """Number of leaky layers ``L``."""
        return len(self.W)

    @property
    def sizes(self) -> list[int]:
        return [self.d_in, *[self.width] * (self.depth + 1), self.d_out]

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """The init of the class docstring (bit-identical for one ``seed``)."""
        gen = None
        if seed is not None:
            gen = torch.Generator(device="cpu").manual_seed(check_seed("seed", seed))

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(shape, generator=gen, dtype=torch.float64)

        w = self.width
        self.inp.copy_(randn(w, self.d_in) / math.sqrt(self.d_in))
        for W in self.W:
            W.zero_()
            W[:, :w] = randn(w, w) * (self.leak * math.sqrt(2.0 / w))
        self.out.copy_(randn(self.d_out, w) / math.sqrt(w))

    def weights(self) -> list[torch.Tensor]:
        """``[W_1, ..., W_L]`` (live, ``[w, w+1]``: the last column is the bias)."""
        return list(self.W)

    def penalty_weights(self) -> dict[str, float]:
        r"""``{parameter name: c}`` with the penalty :math:`\lambda\sum_q c_q\|\theta_q\|^2`
        (class docstring): ``rho_l / (2 leak)`` for ``W.<l-1>``, ``1 / (2 leak)`` for
        ``inp`` and ``out``."""
        rho = self.steps.double().cpu().tolist()
        c = {f"W.{i}": r / (2 * self.leak) for i, r in enumerate(rho)}
        return {"inp": 1 / (2 * self.leak), **c, "out": 1 / (2 * self.leak)}

    def penalty_norm2(self) -> torch.Tensor:
        r""":math:`\sum_q c_q \|\theta_q\|^2` (the penalty is ``lam`` times this)."""
        c = self.penalty_weights()
        params = dict(self.named_parameters())
        return sum((params[n].pow(2).sum() * v for n, v in c.items()),
                   torch.zeros((), dtype=self.inp.dtype, device=self.inp.device))

    def _layer(self, A: torch.Tensor, W: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        w = self.width
        return (1 - rho * self.leak) * A + rho * (torch.relu(A) @ W[:, :w].T + W[:, w])

    def representations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[A_0, A_1, ..., A_L]``, each ``[N, w]``, for ``x [N, d_in]``."""
        A = x @ self.inp.T
        out = [A]
        for W, rho in zip(self.W, self.steps, strict=True):
            A = self._layer(A, W, rho)
            out.append(A)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[N, d_in]`` -> ``[N, d_out]``."""
        A = x @ self.inp.T
        for W, rho in zip(self.W, self.steps, strict=True):
            A = self._layer(A, W, rho)
        return A @ self.out.T

    @torch.no_grad()
    def adapt_steps(self, x: torch.Tensor) -> torch.Tensor:
        r"""Re-set the layer steps by the rule of THEORY 7.6 and return the new ones:
        :math:`\rho_\ell \propto 1/c_\ell`,
        :math:`c_\ell = \|A_\ell - A_{\ell-1}\| / (\rho_\ell \|A_\ell\|)` (the rate at which
        the representation moves per unit of ``p``), normalized to sum 1 and capped at
        :math:`\rho_\ell\tilde L \le 1 -` :data:`STEP_MARGIN` (excess spread over the other
        layers). The weights are kept as they are. Layers whose representation does not move
        (``c = 0``) keep the largest step."""
        reps = self.representations(x)
        rho = self.steps.double()
        c = torch.stack([(b - a).double().norm() / (r * b.double().norm().clamp_min(1e-300))
                         for a, b, r in zip(reps[:-1], reps[1:], rho, strict=True)])
        inv = torch.where(c > 0, 1 / c.clamp_min(1e-300), torch.inf)
        if bool(torch.isinf(inv).all()):
            return self.steps
        inv = torch.where(torch.isinf(inv), inv[torch.isfinite(inv)].max(), inv)
        new = _capped_simplex(inv / inv.sum(), (1 - STEP_MARGIN) / self.leak)
        self.steps.copy_(new.to(self.steps))
        return self.steps

    def extra_repr(self) -> str:
        return (f"d_in={self.d_in}, width={self.width}, depth={self.depth}, "
                f"d_out={self.d_out}, leak={self.leak:g}")


def _capped_simplex(p: torch.Tensor, cap: float) -> torch.Tensor:
    """``p`` (positive, sum 1) with every entry capped at ``cap`` and the excess spread over
    the uncapped entries in proportion (``cap * len(p) >= 1`` assumed)."""
    p = p.clone()
    cap = max(cap, 1.0 / len(p))
    for _ in range(len(p)):
        over = p > cap
        if not bool(over.any()):
            break
        excess = float((p[over] - cap).sum())
        p[over] = cap
        free = p < cap
        p[free] += excess * p[free] / p[free].sum()
    return p / p.sum()
