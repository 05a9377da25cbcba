r"""A model seen as a chain of affine maps and elementwise piecewise-linear activations.

Every structured diagnostic works on this view: weights ``W_l`` (``[n_l, n_{l-1}]``), biases
``b_l`` (or ``None``) and, after layer ``l``, a possibly empty tuple of activations
(ReLU, LeakyReLU). The model is read by the one parser of the package,
:func:`bnstruct.models._algebra.linear_chain` (the one rebalancing uses): :class:`bnstruct.MLP`,
:class:`bnstruct.DeepLinear` and ``nn.Sequential`` containers, nested to any depth, of
``nn.Linear``, ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Identity`` and ``nn.Dropout`` (eval-mode
semantics: Dropout and Identity are dropped). Anything else is a
:class:`~bnstruct.errors.ConfigError` that names the module.

With :math:`D_\ell = \mathrm{diag}(\sigma'(z_\ell))` the Jacobian is
:math:`Jf(x) = D_L W_L D_{L-1} \cdots D_1 W_1` (``D_L = I`` unless the chain ends with an
activation), and ``G_l = df/dz_l`` (``[N, d_out, n_l]``) follows the backward recursion
``G_L = D_L``, ``G_{l-1} = (G_l W_l) D_{l-1}``.

Derivatives at a kink follow PyTorch's autograd (ReLU'(0) = 0, LeakyReLU'(0) = slope), so
every result matches a ``torch.func`` reference exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..models._algebra import linear_chain

__all__ = ["Chain", "Forward", "parse_chain", "check_X", "forward", "backward_factors",
           "is_chain"]


@dataclass(frozen=True)
class _Act:
    """An elementwise piecewise-linear activation: ``x`` if ``x > 0`` else ``slope * x``."""

    slope: float  # 0.0 for ReLU

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return torch.where(z > 0, z, self.slope * z) if self.slope else torch.relu(z)

    def deriv(self, z: torch.Tensor) -> torch.Tensor:
        one = torch.ones((), dtype=z.dtype, device=z.device)
        return torch.where(z > 0, one, torch.full_like(one, self.slope))


@dataclass(frozen=True)
class Chain:
    """The chain view of a model, parameters detached and cast to the compute dtype.

    ``acts[l]`` are the activations applied after layer ``l+1`` (0-based list of length L);
    ``names[l]`` is the module name of layer ``l+1`` (as in ``model.named_modules()``).
    """

    weights: list[torch.Tensor]
    biases: list[torch.Tensor | None]
    acts: list[tuple[_Act, ...]]
    names: list[str]
    model_dtype: torch.dtype

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def sizes(self) -> list[int]:
        return [self.weights[0].shape[1], *(w.shape[0] for w in self.weights)]

    @property
    def d_in(self) -> int:
        return self.weights[0].shape[1]

    @property
    def d_out(self) -> int:
        return self.weights[-1].shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    @property
    def max_slope(self) -> float:
        """Largest ``|sigma'|`` over all activations (1.0 for ReLU and linear chains)."""
        return max([1.0] + [abs(a.slope) for acts in self.acts for a in acts])


def is_chain(model: nn.Module) -> bool:
    """Whether :func:`parse_chain` accepts ``model`` (without raising)."""
    try:
        parse_chain(model)
    except ConfigError:
        return False
    return True


def parse_chain(model: nn.Module, dtype: torch.dtype | None = torch.float64) -> Chain:
    """The chain view of ``model`` with parameters cast to ``dtype`` (``None``: keep).

    Raises :class:`ConfigError` naming the first unsupported module."""
    lc = linear_chain(model)
    layers = lc.linears
    model_dtype = layers[0].weight.dtype
    cast = (lambda t: t.detach()) if dtype is None else (lambda t: t.detach().to(dtype))
    return Chain([cast(m.weight) for m in layers],
                 [None if m.bias is None else cast(m.bias) for m in layers],
                 [tuple(_Act(sl) for sl in acts) for acts in lc.slopes], list(lc.names),
                 model_dtype)


def check_X(X: torch.Tensor, d_in: int | None, dtype: torch.dtype | None,
            device: torch.device | None = None, name: str = "X") -> torch.Tensor:
    """Validate ``X`` (``[N, d_in]``, N >= 1, finite) and cast it; raise :class:`DataError`."""
    if not torch.is_tensor(X):
        try:
            X = torch.as_tensor(X)
        except (TypeError, ValueError, RuntimeError) as e:
            raise DataError(f"{name} must be a tensor or array of shape [N, d_in]: {e}"
                            ) from None
    if X.dim() != 2:
        raise DataError(f"{name} must have shape [N, d_in], got {tuple(X.shape)}")
    if d_in is not None and X.shape[1] != d_in:
        raise DataError(f"{name} has {X.shape[1]} columns but the model expects d_in = {d_in} "
                        f"(shape [N, {d_in}])")
    if X.shape[0] == 0:
        raise DataError(f"{name} is empty (shape {tuple(X.shape)}): pass at least one point")
    if not X.is_floating_point():
        X = X.to(torch.get_default_dtype() if dtype is None else dtype)
    bad = ~torch.isfinite(X)
    if bad.any():
        rows = bad.any(1).nonzero().flatten()
        raise DataError(f"{name} has non-finite values (NaN/inf) in {rows.numel()} row(s), "
                        f"first at row {int(rows[0])}")
    return X.to(dtype=dtype if dtype is not None else X.dtype, device=device)


@dataclass(frozen=True)
class Forward:
    """Stored forward pass: ``a[l]`` = input of layer ``l+1`` (``a_0 = x``), ``[N, n_l]``;
    ``d[l]`` = activation derivative after layer ``l+1`` (``None``: no activation, D = I);
    ``z[l]`` = pre-activation of layer ``l+1``; ``out`` = f(X)."""

    a: list[torch.Tensor]
    z: list[torch.Tensor]
    d: list[torch.Tensor | None]
    out: torch.Tensor


def _activate(acts: tuple[_Act, ...], z: torch.Tensor) -> tuple[torch.Tensor,
                                                                 torch.Tensor | None]:
    d = None
    u = z
    for act in acts:
        dd = act.deriv(u)
        d = dd if d is None else d * dd
        u = act(u)
    return u, d


def forward(chain: Chain, X: torch.Tensor) -> Forward:
    """Forward pass keeping ``a_{l-1}``, ``z_l`` and ``sigma'(z_l)``: memory O(N sum n_l)."""
    a, zs, ds = [X], [], []
    h = X
    for W, b, acts in zip(chain.weights, chain.biases, chain.acts, strict=True):
        z = torch.nn.functional.linear(h, W, b)
        h, d = _activate(acts, z)
        zs.append(z)
        ds.append(d)
        a.append(h)
    return Forward(a[:-1], zs, ds, a[-1])


def backward_factors(chain: Chain, fw: Forward) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(l, G_l)`` for ``l = L .. 1`` (1-based), ``G_l = df/dz_l`` of shape
    ``[N, d_out, n_l]``; only the current factor is kept (memory O(N d_out max n_l)). The
    factors are read-only for the caller (``G_L`` and ``G_{L-1}`` may be expanded views of
    the identity and of ``W_L``)."""
    N = fw.out.shape[0]
    L = chain.depth
    eye = torch.eye(chain.d_out, dtype=fw.out.dtype, device=fw.out.device)
    d_last = fw.d[-1]
    G = eye.expand(N, -1, -1) if d_last is None else eye * d_last[:, None, :]
    for l in range(L, 0, -1):
        yield l, G
        if l > 1:
            W, d = chain.weights[l - 1], fw.d[l - 2]
            if l == L and d_last is None:  # G_L = I: G_L W_L = W_L exactly, no product
                G = W.expand(N, -1, -1) if d is None else W * d[:, None, :]
                continue
            G = G @ W  # a fresh tensor: the mask is applied in place
            if d is not None:
                G.mul_(d[:, None, :])
