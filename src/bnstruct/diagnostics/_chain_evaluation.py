r""":class:`ChainEvaluation`: the :class:`~bnstruct.diagnostics.Evaluation` of a positively
homogeneous chain (:mod:`._chain`), with the structured fast paths.

One forward pass keeps ``a_l``, ``z_l`` and ``sigma'(z_l)``; one backward sweep of the factors
``G_l = df/dz_l`` gives the Jacobian :math:`Jf(x) = G_1 W_1` and the NTK trace together; the
full NTK is :math:`\Theta = \sum_\ell (a_{\ell-1} a_{\ell-1}^T + 1) \otimes G_\ell G_\ell^T`.
With ``implementation="autodiff"`` the Jacobian and the NTK come from ``torch.func`` instead
(the references' path), everything else stays structured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError
from ..models._algebra import balance_residuals
from ._chain import Chain, Forward, backward_factors, check_X, forward, parse_chain
from ._evaluation import BOUND_COLUMNS, Evaluation, check_ntk_mode

__all__ = ["ChainEvaluation", "chain_ntk_matvec"]

#: row-block size (points) of the symmetric full kernel
_SYM_BLOCK = 32


class ChainEvaluation(Evaluation):
    """A chain evaluated on ``X`` (``[N, d_in]``): see :class:`Evaluation` for the arguments."""

    kind = "chain"

    def __init__(self, model: nn.Module, X: Any, *, dtype: torch.dtype | None = torch.float64,
                 implementation: str = "auto", output: Any = None,
                 layers: Sequence[str] | None = None):
        from ._general import output_selector, unwrap

        self.model = unwrap(model)
        self.select = output_selector(None)
        parsed = self.__dict__.pop("_parsed", None)
        self.chain: Chain = parsed if parsed is not None else parse_chain(self.model, dtype)
        self.implementation = "autodiff" if implementation == "autodiff" else "structured"
        self.dtype = self.chain.dtype
        self.model_dtype = self.chain.model_dtype
        self.device = self.chain.weights[0].device
        self.X = check_X(X, self.chain.d_in, self.dtype, self.device)

    def require_chain(self) -> Chain:
        return self.chain

    @property
    def d_out(self) -> int:
        return self.chain.d_out

    # -- the forward pass and what it holds ----------------------------------------------
    @cached_property
    def forward(self) -> Forward:
        """The one stored forward pass of the chain (``a``, ``z``, ``d``, ``out``)."""
        with torch.no_grad():
            return forward(self.chain, self.X)

    @property
    def output(self) -> torch.Tensor:
        return self.forward.out

    def representations(self, pre: bool = False) -> list[torch.Tensor]:
        """``a_l`` (``l < L``) and ``f(X)`` (``l = L``), or the pre-activations ``z_l``."""
        fw = self.forward
        return list(fw.z) if pre else [*fw.a[1:], fw.out]

    @property
    def rep_names(self) -> list[str]:
        return list(self.chain.names)

    def _point_reps(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        fwp = forward(self.chain, x[None])
        return tuple(a[0] for a in [*fwp.a[1:], fwp.out])

    @property
    def weight_names(self) -> list[str]:
        return list(self.chain.names)

    @property
    def weights(self) -> list[torch.Tensor]:
        return list(self.chain.weights)

    @property
    def biases(self) -> list[torch.Tensor | None]:
        return list(self.chain.biases)

    @cached_property
    def param_norm2(self) -> float:
        r""":math:`\|\theta\|^2` of the chain's weights and biases (compute dtype)."""
        return sum(float(W.pow(2).sum()) for W in self.chain.weights) + sum(
            float(b.pow(2).sum()) for b in self.chain.biases if b is not None)

    @cached_property
    def balance(self) -> torch.Tensor:
        """Balancedness residual per hidden layer (``[L-1]``), from the cast weights."""
        return balance_residuals(self.chain.weights, self.chain.biases)

    # -- one backward sweep: the Jacobian and the NTK trace ------------------------------
    @cached_property
    def _sweep(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``G_l`` for ``l = L..1`` once: ``(J, ntk trace)``."""
        chain, fw = self.chain, self.forward
        tr = torch.zeros(self.n_points, dtype=self.dtype, device=self.device)
        G = None
        with torch.no_grad():
            for l, G in backward_factors(chain, fw):
                q = fw.a[l - 1].pow(2).sum(1)
                if chain.biases[l - 1] is not None:
                    q = q + 1.0
                tr += q * torch.linalg.vector_norm(G, dim=(1, 2)).square()
            if G is None:
                raise ConfigError("the chain has no layer")
            return G @ chain.weights[0], tr

    @cached_property
    def jacobian(self) -> torch.Tensor:
        r""":math:`Jf(x_i)`, ``[N, d_out, d_in]``."""
        if self.implementation == "structured":
            return self._sweep[0]
        return self.functional.jacobian(self.X).detach()

    # -- NTK -----------------------------------------------------------------------------
    def ntk(self, mode: str = "full", X2: torch.Tensor | None = None) -> torch.Tensor:
        r"""Empirical NTK (see :func:`bnstruct.ntk`); ``X = X2`` results are cached."""
        check_ntk_mode(mode, X2)
        if X2 is not None:
            X2 = check_X(X2, self.X.shape[1], self.dtype, self.device, name="X2")
            with torch.no_grad():
                if self.implementation == "autodiff":
                    return self.functional.ntk(self.X, X2, "full", self.d_out)
                return self._ntk_cross(X2)
        if mode == "trace" and self.implementation == "structured":
            return self._sweep[1]
        key = ("ntk", mode)
        if key not in self._by_args:
            with torch.no_grad():
                self._by_args[key] = (
                    self.functional.ntk(self.X, None, mode, self.d_out)
                    if self.implementation == "autodiff" else self._ntk_diag_structured()
                    if mode == "diag" else self._ntk_full_structured())
        K: torch.Tensor = self._by_args[key]
        return K

    def _ntk_diag_structured(self) -> torch.Tensor:
        chain, fw = self.chain, self.forward
        acc = torch.zeros(self.n_points, chain.d_out, chain.d_out, dtype=self.dtype,
                          device=self.device)
        for l, G in backward_factors(chain, fw):
            q = fw.a[l - 1].pow(2).sum(1) + (1.0 if chain.biases[l - 1] is not None else 0.0)
            acc += q[:, None, None] * (G @ G.transpose(1, 2))
        return acc

    def _ntk_full_structured(self) -> torch.Tensor:
        r"""``Theta(X, X)``: only blocks ``(i, j)`` with ``j <= end of i's row block`` are
        computed (about half the matmul work), the rest from :math:`\Theta(x_j, x_i) =
        \Theta(x_i, x_j)^T`."""
        chain, fw = self.chain, self.forward
        N, d = self.n_points, chain.d_out
        acc = torch.zeros(N * d, N * d, dtype=self.dtype, device=self.device)
        blocks = [(i0, min(i0 + _SYM_BLOCK, N)) for i0 in range(0, N, _SYM_BLOCK)]
        for l, G in backward_factors(chain, fw):
            K = fw.a[l - 1] @ fw.a[l - 1].T
            if chain.biases[l - 1] is not None:
                K = K + 1
            Gf = G.reshape(N * d, -1)
            for i0, i1 in blocks:
                gram = Gf[i0 * d:i1 * d] @ Gf[:i1 * d].T
                acc[i0 * d:i1 * d, :i1 * d].view(i1 - i0, d, i1, d).addcmul_(
                    gram.view(i1 - i0, d, i1, d), K[i0:i1, :i1, None].unsqueeze(1))
        out = acc.view(N, d, N, d).permute(0, 2, 1, 3).contiguous()
        del acc
        iu = torch.triu_indices(N, N, offset=1, device=out.device)
        out[iu[0], iu[1]] = out[iu[1], iu[0]].transpose(-1, -2)
        return out

    def _ntk_cross(self, X2: torch.Tensor) -> torch.Tensor:
        chain, fw = self.chain, self.forward
        fw2 = forward(chain, X2)
        N, N2, d = self.n_points, X2.shape[0], chain.d_out
        acc = torch.zeros(N * d, N2 * d, dtype=self.dtype, device=self.device)
        it2 = backward_factors(chain, fw2)
        for l, G in backward_factors(chain, fw):
            G2 = next(it2)[1]
            K = fw.a[l - 1] @ fw2.a[l - 1].T
            if chain.biases[l - 1] is not None:
                K = K + 1
            gram = G.reshape(N * d, -1) @ G2.reshape(N2 * d, -1).T
            acc.view(N, d, N2, d).addcmul_(gram.view(N, d, N2, d), K[:, None, :, None])
        return acc.view(N, d, N2, d).permute(0, 2, 1, 3).contiguous()

    def ntk_matvec(self) -> Callable[[torch.Tensor], torch.Tensor]:
        r"""``v [N, d_out] -> Theta(X, X) v`` (:math:`J (J^T v)`, never the matrix)."""
        if self.implementation == "autodiff":
            return self.functional.ntk_matvec(self.X)
        return chain_ntk_matvec(self.chain, self.forward)

    # -- the bottleneck inequality -------------------------------------------------------
    def check_k(self, k: object) -> int:
        """``k`` must be an integer with ``0 <= k <= min(sizes)`` (the narrowest layer)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ConfigError(f"k must be a non-negative integer, got {k!r}")
        sizes = self.chain.sizes
        narrow = min(range(len(sizes)), key=lambda i: sizes[i])
        if k > sizes[narrow]:
            where = ("the input" if narrow == 0 else "the output" if narrow == len(sizes) - 1
                     else f"hidden layer {narrow}")
            raise ConfigError(f"k = {k} is larger than the narrowest layer ({where} has width "
                              f"{sizes[narrow]}; sizes {sizes})")
        return k

    def bound(self, k: int) -> pd.DataFrame:
        """Both sides of the bottleneck inequality per point (see
        :func:`bnstruct.bottleneck_bound`)."""
        k = self.check_k(k)
        if self.chain.max_slope > 1:
            raise ConfigError(f"the bound needs |activation slope| <= 1; this model has a "
                              f"slope {self.chain.max_slope:g}")
        key = ("bound", k)
        if key not in self._by_args:
            self._by_args[key] = self._bound(k)
        df: pd.DataFrame = self._by_args[key]
        return df.copy()

    def _bound(self, k: int) -> pd.DataFrame:
        lp2 = 2 * self.log_pdet(k)
        norm2 = self.param_norm2
        c1 = norm2 - k * self.chain.depth
        tail = sum(float(s[k:].pow(2).sum()) for s in self.weight_spectra)
        head = sum(float((s[:k].pow(2) - 1 - 2 * s[:k].log()).sum())
                   for s in self.weight_spectra)
        lhs = tail + head
        rhs = (c1 - lp2).cpu().numpy()
        with np.errstate(invalid="ignore"):
            slack = rhs - lhs
        return pd.DataFrame({
            "point": range(self.n_points), "k": k, "lhs": lhs, "rhs": rhs,
            "slack": slack, "tail": tail, "head": head, "c1": c1,
            "log_pdet2": lp2.cpu().numpy(), "param_norm2": norm2,
        }, columns=BOUND_COLUMNS)


def chain_ntk_matvec(chain: Chain, fw: Forward) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""``v [N, d_out] -> Theta(X, X) v = J (J^T v)`` from the stored forward pass ``fw``:
    one backward sweep (the parameter cotangent :math:`J^T v`) and one forward-mode sweep
    (its image), memory O(N sum n_l). A bias is handled as a weight on a column of ones
    (``[a_{l-1}, 1]``), so each layer costs four matrix products."""
    L = chain.depth
    ones = torch.ones(fw.out.shape[0], 1, dtype=fw.out.dtype, device=fw.out.device)
    acts = [a if b is None else torch.cat([a, ones], 1)
            for a, b in zip(fw.a, chain.biases, strict=True)]
    WT = [W.T for W in chain.weights]

    def mv(v: torch.Tensor) -> torch.Tensor:
        delta = v if fw.d[-1] is None else v * fw.d[-1]
        g: list[torch.Tensor] = [torch.empty(0)] * L
        for l in range(L - 1, -1, -1):
            g[l] = acts[l].T @ delta  # [n_{l-1} (+1), n_l]: gradient of (W_l, b_l)^T
            if l > 0:
                delta = delta @ chain.weights[l]  # fresh: masked in place
                mask = fw.d[l - 1]
                if mask is not None:
                    delta.mul_(mask)
        zdot = acts[0] @ g[0]
        for l in range(1, L):
            d = fw.d[l - 1]
            adot = zdot if d is None else zdot.mul_(d)
            zdot = torch.addmm(acts[l] @ g[l], adot, WT[l])
        return zdot if fw.d[-1] is None else zdot.mul_(fw.d[-1])
    return mv
