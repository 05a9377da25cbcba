r"""One cached evaluation of a network on a batch: everything is computed once, on demand.

:class:`Evaluation` parses the model once (the package's one parser), casts it once to the
compute dtype, runs one forward pass that keeps the representations, pre-activations and
activation derivatives, and computes the Jacobian, the SVDs and the NTK figures only when
first asked, then keeps them. The public diagnostics (:func:`~bnstruct.jacobian`,
:func:`~bnstruct.ntk`, :func:`~bnstruct.bottleneck_bound`, ...) are thin views of it, and
:func:`~bnstruct.analyze` reads every column from a single one.

Conventions:

- **Compute dtype.** Every measurement, the representations included, is computed in the
  compute dtype (``dtype``, float64 by default) from the chain cast to it.
- **Numerical ranks** of representations use ``eps`` of the *model's* dtype (the precision
  its weights are known to); ranks of the Jacobian use ``eps`` of the compute dtype.
- **Eval mode.** Dropout is the identity (chains drop it; the ``torch.func`` path runs the
  model in eval mode and restores the user's flags).
- **Implementation** (``implementation=``): ``"structured"`` uses the chain's per-layer
  factors (:mod:`._chain`, no per-parameter Jacobian), ``"autodiff"`` differentiates the
  model with ``torch.func`` (:mod:`._autodiff`), ``"auto"`` takes ``"structured"`` for chains
  and ``"autodiff"`` otherwise. :attr:`Evaluation.implementation` names the one that runs.
  The Jacobian and the NTK use it; weight spectra, representations and the bound need a
  chain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..conventions import center
from ..errors import ConfigError, DataError
from ..models._algebra import balance_residuals
from ._autodiff import Functional, quiet_jvp_import
from ._chain import Chain, Forward, backward_factors, check_X, forward, parse_chain
from ._general import (
    check_batch,
    conv_operator_svals,
    hook_points,
    output_selector,
    probe,
    record,
    unwrap,
    weight_layers,
    weight_matrix,
)
from ._lanczos import DENSE_MAX, dense_top_eig, top_eig

__all__ = ["Evaluation", "IMPLEMENTATIONS", "Implementation", "NTK_MODES", "NTK_DENSE_MAX",
           "BOUND_COLUMNS", "log_pdet_from_svals", "svdvals", "svdvals_list"]

Implementation = Literal["structured", "autodiff", "auto"]
IMPLEMENTATIONS: tuple[str, ...] = ("structured", "autodiff", "auto")
NTK_MODES = ("full", "trace", "diag")
#: ``ntk_max_eig(method="auto")`` forms the matrix when ``N * d_out`` is at most this.
NTK_DENSE_MAX = 512
BOUND_COLUMNS = ["point", "k", "lhs", "rhs", "slack", "tail", "head", "c1", "log_pdet2",
                 "param_norm2"]
#: row-block size (points) of the symmetric full kernel
_SYM_BLOCK = 32


def svdvals(A: torch.Tensor) -> torch.Tensor:
    """Singular values of ``A`` (``[..., m, n]``), descending, computed on the tall side
    (``A^T`` when ``m < n``: LAPACK is ten times slower on wide matrices, e.g. a
    ``[512, 2048]`` representation), and on the CPU through NumPy's LAPACK: torch's batched
    CPU SVD can slow down a hundredfold on Jacobians full of exact zeros (ReLU, max-pooling),
    whose iterations run into subnormal numbers."""
    if A.shape[-2] < A.shape[-1]:
        A = A.transpose(-1, -2)
    if A.device.type != "cpu" or A.numel() == 0:
        return torch.linalg.svdvals(A)
    return torch.from_numpy(np.linalg.svd(A.detach().contiguous().numpy(),
                                          compute_uv=False)).to(A.dtype)


def svdvals_list(mats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`svdvals` of each matrix of ``mats``, in order; matrices of the same shape,
    dtype and device are stacked into one batched call (the same LAPACK routine on each
    matrix, so the values are those of one call per matrix)."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, A in enumerate(mats):
        groups.setdefault((tuple(A.shape), A.dtype, A.device), []).append(i)
    out: list[torch.Tensor] = [torch.empty(0)] * len(mats)
    for idx in groups.values():
        if len(idx) == 1:
            out[idx[0]] = svdvals(mats[idx[0]])
            continue
        for i, s in zip(idx, svdvals(torch.stack([mats[i] for i in idx])).unbind(0),
                        strict=True):
            out[i] = s
    return out


def log_pdet_from_svals(s: torch.Tensor, k: int, shape: tuple[int, int],
                        rtol: float | None = None) -> torch.Tensor:
    r""":math:`\sum_{i \le k} \log s_i` from singular values ``s`` (``[..., r]``, descending)
    of ``m x n`` matrices; ``-inf`` where :math:`s_k \le \mathrm{rtol}\, s_1` (default
    ``max(m, n) eps``: numpy's rank rule)."""
    if k == 0:
        return torch.zeros(s.shape[:-1], dtype=s.dtype, device=s.device)
    tol = (max(shape) * torch.finfo(s.dtype).eps) if rtol is None else rtol
    top = s[..., :k]
    out = top.clamp_min(torch.finfo(s.dtype).tiny).log().sum(-1)
    deficient = top[..., -1] <= tol * s[..., 0]
    return torch.where(deficient, torch.full_like(out, -float("inf")), out)


class Evaluation:
    """A network evaluated on the points ``X`` (``[N, d_in]``), every quantity cached.

    Args:
        model: any ``nn.Module`` mapping ``[N, d_in] -> [N, d_out]``; chains
            (:func:`bnstruct.models._algebra.linear_chain`) get the structured fast paths and
            the chain-only quantities (weight spectra, representations, bound, balancedness).
        X: the points (validated: finite, 2-d, ``d_in`` columns, at least one row).
        dtype: compute dtype (float64 default; ``None`` keeps the model's).
        implementation: ``"auto"`` (default), ``"structured"`` or ``"autodiff"`` (module
            docstring); the resolved choice is :attr:`implementation`.
    """

    def __init__(self, model: nn.Module, X: torch.Tensor, *,
                 dtype: torch.dtype | None = torch.float64,
                 implementation: str = "auto",
                 output: int | str | Callable[[Any], torch.Tensor] | None = None,
                 layers: Sequence[str] | None = None):
        if implementation not in IMPLEMENTATIONS:
            raise ConfigError(f"unknown implementation {implementation!r}: choose one of "
                              f"{', '.join(IMPLEMENTATIONS)}")
        model = unwrap(model)
        self.model = model
        self.layers_asked = None if layers is None else list(
            [layers] if isinstance(layers, str) else layers)
        self.select = output_selector(output)
        self.chain: Chain | None = None
        self._chain_error: ConfigError | None = None
        if output is not None or layers is not None:
            self._chain_error = ConfigError(
                "the chain view is not used when output= or layers= is given")
        else:
            try:
                self.chain = parse_chain(model, dtype)
            except ConfigError as e:
                self._chain_error = e
        if self.chain is None and implementation == "structured":
            raise ConfigError(f"implementation='structured' needs a chain: {self._chain_error}")
        self.implementation: str = ("structured" if self.chain is not None
                                    and implementation != "autodiff" else "autodiff")
        self._cache: dict[object, object] = {}
        if self.chain is not None:
            self.dtype = self.chain.dtype
            self.model_dtype = self.chain.model_dtype
            self.device = self.chain.weights[0].device
            self.X = check_X(X, self.chain.d_in, self.dtype, self.device)
        else:
            p = next(model.parameters(), None)
            if p is None:
                raise ConfigError(f"{type(model).__name__} has no parameters")
            self.model_dtype = p.dtype
            self.dtype = dtype or p.dtype
            self.device = p.device
            self.X = check_batch(X, self.dtype, self.device)
            f = self.functional
            out = probe(lambda x: f(f.params, x), self.X)
            self._cache["d_out"] = int(out.shape[1])
            if self.layers_asked is not None:  # names exist and run: checked up front
                self.rep_names  # noqa: B018

    # -- plumbing ------------------------------------------------------------------------
    def _cached(self, key: object, compute: Callable[[], object]) -> object:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def require_chain(self) -> Chain:
        """The chain view; the parser's :class:`ConfigError` (naming the module) if none."""
        if self.chain is None:
            assert self._chain_error is not None
            raise self._chain_error
        return self.chain

    @property
    def n_points(self) -> int:
        return self.X.shape[0]

    @property
    def functional(self) -> Functional:
        """The model as a pure function of cast parameters (``torch.func`` paths)."""
        f = self._cached("functional",
                         lambda: Functional(self.model, self.dtype, self.select))
        assert isinstance(f, Functional)
        return f

    @property
    def d_out(self) -> int:
        if self.chain is not None:
            return self.chain.d_out
        d = self._cache["d_out"]
        assert isinstance(d, int)
        return d

    @property
    def is_chain(self) -> bool:
        """Whether the structured chain view applies (else: the general-model path)."""
        return self.chain is not None

    @property
    def chain_reason(self) -> str:
        """Why there is no chain view (``""`` for chains)."""
        return "" if self._chain_error is None else str(self._chain_error)

    @property
    def output(self) -> torch.Tensor:
        """``f(X)``, ``[N, d_out]``, in the compute dtype."""
        if self.chain is not None:
            return self.forward.out
        f = self.functional

        def run() -> torch.Tensor:
            with torch.no_grad():
                return f(f.params, self.X)
        out = self._cached("output", run)
        assert isinstance(out, torch.Tensor)
        return out

    # -- the forward pass and what it holds ----------------------------------------------
    @property
    def forward(self) -> Forward:
        """The one stored forward pass of the chain (``a``, ``z``, ``d``, ``out``)."""
        chain = self.require_chain()

        def run() -> Forward:
            with torch.no_grad():
                return forward(chain, self.X)
        fw = self._cached("forward", run)
        assert isinstance(fw, Forward)
        return fw

    def representations(self, pre: bool = False) -> list[torch.Tensor]:
        """Chains: ``a_l`` (``l < L``) and ``f(X)`` (``l = L``), or the pre-activations
        ``z_l``. Other models: the outputs at :attr:`rep_names` (:mod:`._general`), in the
        compute dtype, the model in eval mode."""
        if self.chain is None:
            if pre:
                raise ConfigError("pre=True needs a chain (pre-activations of its Linear "
                                  "layers); pass layers=[...] to read other modules")
            return self._general_reps()[1]
        fw = self.forward
        return list(fw.z) if pre else [*fw.a[1:], fw.out]

    @property
    def rep_names(self) -> list[str]:
        """Names of the representations (chains: the layer names)."""
        if self.chain is not None:
            return list(self.chain.names)
        return self._general_reps()[0]

    def _general_reps(self) -> tuple[list[str], list[torch.Tensor]]:
        def run() -> tuple[list[str], list[torch.Tensor]]:
            f = self.functional
            points = hook_points(self.model, self.layers_asked)
            with torch.no_grad():
                names, outs, y = record(points, lambda: f(f.params, self.X),
                                        strict=self.layers_asked is not None)
            outs = [o.detach().reshape(o.shape[0], *o.shape[1:]) for o in outs]
            if self.layers_asked is None:
                names, outs = [*names, "output"], [*outs, y.detach()]
            return names, outs
        out = self._cached("general_reps", run)
        assert isinstance(out, tuple)
        return out

    @property
    def rep_spectra(self) -> list[torch.Tensor]:
        """Singular values of each centered representation (``[N, n_l]``); representations of
        the same shape go through one batched SVD call."""
        def run() -> list[torch.Tensor]:
            return svdvals_list([center(A.reshape(A.shape[0], -1))
                                 for A in self.representations()])
        out = self._cached("rep_spectra", run)
        assert isinstance(out, list)
        return out

    @property
    def weight_names(self) -> list[str]:
        """Qualified names of the weight layers (chains: Linear; else Linear/Conv1d/Conv2d)."""
        if self.chain is not None:
            return list(self.chain.names)
        return [n for n, _ in weight_layers(self.model)]

    @property
    def weights(self) -> list[torch.Tensor]:
        """Weight matrices in the compute dtype (conv kernels as ``out x (in/groups * k)``)."""
        if self.chain is not None:
            return list(self.chain.weights)
        out = self._cached("weights", lambda: [weight_matrix(m, self.dtype)
                                               for _, m in weight_layers(self.model)])
        assert isinstance(out, list)
        return out

    @property
    def weight_spectra(self) -> list[torch.Tensor]:
        """Singular values of every weight matrix (compute dtype), in layer order."""
        out = self._cached("weight_spectra",
                           lambda: [torch.linalg.svdvals(W) for W in self.weights])
        assert isinstance(out, list)
        return out

    def conv_operator_spectra(self) -> list[torch.Tensor | str]:
        """Per weight layer: singular values of a convolution as an operator on its input
        grid with circular padding (:func:`._general.conv_operator_svals`), or why none."""
        def run() -> list[torch.Tensor | str]:
            grids: dict[str, list[int]] = {}
            mods = weight_layers(self.model)

            def grab(name: str) -> Callable[..., None]:
                def h(_m: nn.Module, args: Any, _out: Any) -> None:
                    grids.setdefault(name, list(args[0].shape[2:]))
                return h
            handles = [m.register_forward_hook(grab(n)) for n, m in mods
                       if isinstance(m, nn.Conv1d | nn.Conv2d)]
            try:
                f = self.functional
                with torch.no_grad():
                    f(f.params, self.X[:1])
            finally:
                for hd in handles:
                    hd.remove()
            return [conv_operator_svals(m, grids[n], self.dtype) if n in grids
                    else "not a convolution" if not isinstance(m, nn.Conv1d | nn.Conv2d)
                    else "not run on X" for n, m in mods]
        out = self._cached("conv_operator", run)
        assert isinstance(out, list)
        return out

    def layer_jacobian_ranks(self, points: int = 64) -> np.ndarray:
        """Max over the first ``points`` points of the numerical rank of the Jacobian of the
        input-to-representation map ``x -> h_l(x)`` (``[dim_l, d_in]``, ``eps`` of the
        compute dtype, numpy's rule), one per representation."""
        def run() -> np.ndarray:
            f = self.functional
            Xp = self.X[:points]
            if self.chain is not None:
                pts = None
            else:
                pts = hook_points(self.model, self.layers_asked)
            names = self.rep_names

            def reps_of(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
                if pts is None:  # a chain: its representations from the cast chain
                    chain = self.require_chain()
                    fwp = forward(chain, x[None])
                    return tuple(a[0] for a in [*fwp.a[1:], fwp.out])
                _, outs, y = record(pts, lambda: f(f.params, x[None]), strict=False)
                got = [o[0].reshape(-1) for o in outs]
                if self.layers_asked is None:
                    got.append(y[0])
                return tuple(got)

            from torch.func import jacfwd, vmap

            quiet_jvp_import()
            ranks = np.zeros(len(names), dtype=np.int64)
            chunk = max(1, 2**27 // max(1, sum(int(np.prod(r.shape[1:])) for r in
                                               self.representations()) * Xp[0].numel() * 8))
            for i in range(0, Xp.shape[0], chunk):
                Js = vmap(jacfwd(reps_of))(Xp[i:i + chunk])
                for l, J in enumerate(Js):
                    J = J.reshape(J.shape[0], J.shape[1], -1)  # [points, dim_l, d_in]
                    s = svdvals(J)
                    tol = max(J.shape[1:]) * torch.finfo(s.dtype).eps
                    r = (s > s[:, :1] * tol).sum(1) if s.shape[1] else torch.zeros(1)
                    ranks[l] = max(ranks[l], int(r.max()))
            return ranks
        out = self._cached(("layer_jacobian_ranks", points), run)
        assert isinstance(out, np.ndarray)
        return out

    @property
    def param_norm2(self) -> float:
        r""":math:`\|\theta\|^2` of the chain's weights and biases (compute dtype)."""
        chain = self.require_chain()

        def run() -> float:
            return sum(float(W.pow(2).sum()) for W in chain.weights) + sum(
                float(b.pow(2).sum()) for b in chain.biases if b is not None)
        v = self._cached("param_norm2", run)
        assert isinstance(v, float)
        return v

    @property
    def balance(self) -> torch.Tensor:
        """Balancedness residual per hidden layer (``[L-1]``), from the cast weights."""
        chain = self.require_chain()
        v = self._cached("balance", lambda: balance_residuals(chain.weights, chain.biases))
        assert isinstance(v, torch.Tensor)
        return v

    # -- one backward sweep: the Jacobian and the NTK trace ------------------------------
    def _sweep(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Structured: ``G_l`` for ``l = L..1`` once; returns ``(J, ntk trace)``."""
        def run() -> tuple[torch.Tensor, torch.Tensor]:
            chain, fw = self.require_chain(), self.forward
            tr = torch.zeros(self.n_points, dtype=self.dtype, device=self.device)
            G = None
            with torch.no_grad():
                for l, G in backward_factors(chain, fw):
                    q = fw.a[l - 1].pow(2).sum(1)
                    if chain.biases[l - 1] is not None:
                        q = q + 1.0
                    tr += q * torch.linalg.vector_norm(G, dim=(1, 2)).square()
                assert G is not None
                return G @ chain.weights[0], tr
        out = self._cached("sweep", run)
        assert isinstance(out, tuple)
        return out

    @property
    def jacobian(self) -> torch.Tensor:
        r""":math:`Jf(x_i)`, ``[N, d_out, d_in]``."""
        if self.implementation == "structured":
            return self._sweep()[0]

        def run() -> torch.Tensor:
            return self.functional.jacobian(self.X).detach()
        J = self._cached("jacobian", run)
        assert isinstance(J, torch.Tensor)
        return J

    @property
    def jacobian_svals(self) -> torch.Tensor:
        """Singular values of every ``Jf(x_i)``, ``[N, min(d_out, d_in)]``."""
        s = self._cached("jacobian_svals", lambda: svdvals(self.jacobian))
        assert isinstance(s, torch.Tensor)
        return s

    def log_pdet(self, k: int) -> torch.Tensor:
        r""":math:`\log|Jf(x_i)|_k` per point (``-inf`` where the rank is below ``k``)."""
        J = self.jacobian
        return log_pdet_from_svals(self.jacobian_svals, k, (J.shape[1], J.shape[2]))

    @property
    def jacobian_ranks(self) -> np.ndarray:
        """Numerical rank of every ``Jf(x_i)`` (``eps`` of the compute dtype)."""
        J, s = self.jacobian, self.jacobian_svals
        tol = max(J.shape[1:]) * torch.finfo(s.dtype).eps
        return (s > s[:, :1] * tol).sum(1).cpu().numpy()

    # -- NTK -----------------------------------------------------------------------------
    def ntk(self, mode: str = "full", X2: torch.Tensor | None = None) -> torch.Tensor:
        r"""Empirical NTK (see :func:`bnstruct.ntk`); ``X = X2`` results are cached."""
        if mode not in NTK_MODES:
            raise ConfigError(f"unknown NTK mode {mode!r}: choose one of {', '.join(NTK_MODES)}")
        if X2 is not None and mode != "full":
            raise ConfigError(f"mode={mode!r} is the kernel at (x_i, x_i): X2 must be None")
        if X2 is not None:
            if self.chain is not None:
                X2 = check_X(X2, self.X.shape[1], self.dtype, self.device, name="X2")
            else:
                X2 = check_batch(X2, self.dtype, self.device)
                if X2.shape[1:] != self.X.shape[1:]:
                    raise DataError(f"X2 has point shape {list(X2.shape[1:])} but X has "
                                    f"{list(self.X.shape[1:])}")
            return self._ntk_cross(X2)
        if mode == "trace" and self.implementation == "structured":
            return self._sweep()[1]

        def run() -> torch.Tensor:
            with torch.no_grad():
                if self.implementation == "autodiff":
                    return self.functional.ntk(self.X, None, mode, self.d_out)
                if mode == "diag":
                    return self._ntk_diag_structured()
                return self._ntk_full_structured()
        K = self._cached(("ntk", mode), run)
        assert isinstance(K, torch.Tensor)
        return K

    def _ntk_diag_structured(self) -> torch.Tensor:
        chain, fw = self.require_chain(), self.forward
        acc = None
        for l, G in backward_factors(chain, fw):
            q = fw.a[l - 1].pow(2).sum(1) + (1.0 if chain.biases[l - 1] is not None else 0.0)
            term = q[:, None, None] * (G @ G.transpose(1, 2))
            acc = term if acc is None else acc + term
        assert acc is not None
        return acc

    def _ntk_full_structured(self) -> torch.Tensor:
        r"""``Theta(X, X)``: only blocks ``(i, j)`` with ``j <= end of i's row block`` are
        computed (about half the matmul work), the rest from :math:`\Theta(x_j, x_i) =
        \Theta(x_i, x_j)^T`."""
        chain, fw = self.require_chain(), self.forward
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
        with torch.no_grad():
            if self.implementation == "autodiff":
                return self.functional.ntk(self.X, X2, "full", self.d_out)
            chain, fw = self.require_chain(), self.forward
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
        return _chain_ntk_matvec(self.require_chain(), self.forward)

    def ntk_max_eig(self, method: str = "auto", tol: float = 1e-10, seed: int = 0) -> float:
        """Largest eigenvalue of the ``N d_out x N d_out`` matrix ``Theta(X, X)`` (see
        :func:`bnstruct.ntk_max_eig`); cached per ``(method, tol, seed)``."""
        if method not in ("auto", "lanczos", "dense"):
            raise ConfigError(f"unknown method {method!r}: choose auto, lanczos or dense")
        N, d = self.n_points, self.d_out
        n = N * d

        def run() -> float:
            if method == "dense" or (method == "auto" and n <= NTK_DENSE_MAX):
                M = self.ntk("full").permute(0, 2, 1, 3).reshape(n, n)
                return float(torch.linalg.eigvalsh((M + M.T) / 2)[-1])
            mv = self.ntk_matvec()

            @torch.no_grad()
            def flat(v: torch.Tensor) -> torch.Tensor:
                return mv(v.reshape(N, d)).reshape(-1)
            return top_eig(flat, n, dtype=self.dtype, device=self.device, tol=tol, seed=seed)
        v = self._cached(("ntk_max_eig", method, tol, seed), run)
        assert isinstance(v, float)
        return v

    # -- the bottleneck inequality -------------------------------------------------------
    def check_k(self, k: object) -> int:
        """``k`` must be an integer with ``0 <= k <= min(sizes)`` (the narrowest layer)."""
        chain = self.require_chain()
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ConfigError(f"k must be a non-negative integer, got {k!r}")
        sizes = chain.sizes
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
        chain = self.require_chain()
        k = self.check_k(k)
        if chain.max_slope > 1:
            raise ConfigError(f"the bound needs |activation slope| <= 1; this model has a "
                              f"slope {chain.max_slope:g}")

        def run() -> pd.DataFrame:
            lp2 = 2 * self.log_pdet(k)
            norm2 = self.param_norm2
            c1 = norm2 - k * chain.depth
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
        df = self._cached(("bound", k), run)
        assert isinstance(df, pd.DataFrame)
        return df.copy()

    # -- the objective -------------------------------------------------------------------
    def check_Y(self, Y: torch.Tensor) -> torch.Tensor:
        Yc = check_X(Y, None, self.dtype, self.device, name="Y")
        N, d = self.n_points, self.d_out
        if Yc.shape != (N, d):
            raise DataError(f"Y must have shape [N, d_out] = [{N}, {d}], got "
                            f"{tuple(Yc.shape)}")
        return Yc

    def fit(self, Y: torch.Tensor) -> float:
        r""":math:`\frac1N \sum_i \|f(x_i) - y_i\|^2`."""
        Yc = self.check_Y(Y)
        return float((self.output - Yc).pow(2).sum()) / self.n_points

    def hessian_max_eig(self, Y: torch.Tensor, lam: float, method: str = "auto",
                        tol: float = 1e-10, seed: int = 0) -> float:
        """Top Hessian eigenvalue of the regularized objective (see
        :func:`bnstruct.hessian_max_eig`); always ``torch.func`` (HVPs by ``jvp`` of
        ``grad``)."""
        from torch.func import grad, jvp

        if method not in ("auto", "lanczos", "dense"):
            raise ConfigError(f"unknown method {method!r}: choose auto, lanczos or dense")
        if not isinstance(lam, int | float) or isinstance(lam, bool) or not lam >= 0:
            raise ConfigError(f"lam must be a number >= 0, got {lam!r}")
        Yc = self.check_Y(Y)
        fn, theta0 = self.functional.objective(self.X, Yc, float(lam))
        quiet_jvp_import()
        g = grad(fn)

        def hvp(v: torch.Tensor) -> torch.Tensor:
            return jvp(g, (theta0,), (v,))[1]

        n = theta0.numel()
        if method == "dense" or (method == "auto" and n <= DENSE_MAX):
            return dense_top_eig(hvp, n, dtype=theta0.dtype, device=theta0.device)
        return top_eig(hvp, n, dtype=theta0.dtype, device=theta0.device, tol=tol, seed=seed)


def _chain_ntk_matvec(chain: Chain, fw: Forward) -> Callable[[torch.Tensor], torch.Tensor]:
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
