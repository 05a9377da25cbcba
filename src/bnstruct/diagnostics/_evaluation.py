r"""One cached evaluation of a network on a batch: everything is computed once, on demand.

:class:`Evaluation` is the protocol every diagnostic reads; ``Evaluation(model, X)`` returns
one of its two implementations, chosen by tracing the model
(:func:`bnstruct.models.linear_chain`, the package's one parser):

- :class:`~bnstruct.diagnostics._chain_evaluation.ChainEvaluation` for a positively
  homogeneous chain (an MLP in any wrapper): the structured fast paths and the theory's
  quantities (weight spectra of the chain, bound, balancedness);
- :class:`~bnstruct.diagnostics._module_evaluation.ModuleEvaluation` for any other module:
  ``torch.func`` (:mod:`._autodiff`), hooks for the representations (:mod:`._general`).

Each casts the model once to the compute dtype, runs one forward pass and computes the
Jacobian, the SVDs and the NTK figures only when first asked (``functools.cached_property``,
or a per-argument table for methods), then keeps them. The public diagnostics
(:func:`~bnstruct.jacobian`, :func:`~bnstruct.ntk`, :func:`~bnstruct.bottleneck_bound`, ...)
are thin views of it, and :func:`~bnstruct.analyze` reads every column from a single one.

Conventions:

- **Compute dtype.** Every measurement, the representations included, is computed in the
  compute dtype (``dtype``, float64 by default) from the model cast to it.
- **Numerical ranks** of representations use ``eps`` of the *model's* dtype (the precision
  its weights are known to); ranks of the Jacobian use ``eps`` of the compute dtype.
- **Eval mode.** Dropout is the identity (chains drop it; the ``torch.func`` path runs the
  model in eval mode and restores the user's flags).
- **Implementation** (``implementation=``): ``"structured"`` uses the chain's per-layer
  factors (:mod:`._chain`, no per-parameter Jacobian), ``"autodiff"`` differentiates the
  model with ``torch.func`` (:mod:`._autodiff`), ``"auto"`` takes ``"structured"`` for chains
  and ``"autodiff"`` otherwise. :attr:`Evaluation.implementation` names the one that runs.
  The Jacobian and the NTK use it; the bound and balancedness need a chain.
- **Hessian-vector products** (:attr:`Evaluation.hvp_method`): forward-over-reverse
  (``jvp`` of ``grad``) or reverse-over-reverse (``vjp`` of ``grad``), chosen per device
  type by :data:`HVP_METHODS` (measured: :func:`bnstruct.bench.bench_hvp`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError, DataError
from ._autodiff import Functional, quiet_jvp_import
from ._chain import Chain, check_X, parse_chain
from ._general import unwrap
from ._lanczos import DENSE_MAX, dense_top_eig, top_eig

__all__ = ["Evaluation", "IMPLEMENTATIONS", "Implementation", "NTK_MODES", "check_ntk_mode",
           "NTK_DENSE_MAX",
           "BOUND_COLUMNS", "HVP_METHODS", "hvp_method", "log_pdet_from_svals", "svdvals",
           "svdvals_list"]

Implementation = Literal["structured", "autodiff", "auto"]
IMPLEMENTATIONS: tuple[str, ...] = ("structured", "autodiff", "auto")
NTK_MODES = ("full", "trace", "diag")
#: ``ntk_max_eig(method="auto")`` forms the matrix when ``N * d_out`` is at most this.
NTK_DENSE_MAX = 512
BOUND_COLUMNS = ["point", "k", "lhs", "rhs", "slack", "tail", "head", "c1", "log_pdet2",
                 "param_norm2"]
#: the Hessian-vector product per device type, chosen by measurement (``bnstruct bench
#: analyze`` times both, :func:`bnstruct.bench.bench_hvp`). CPU (2 cores, 1 thread, the
#: composite MLP L=12 width 64, P = 44k, N = 256, float64): reverse-over-reverse (``vjp`` of
#: ``grad``, the gradient's graph built once) 11.6 ms per product, forward-over-reverse
#: (``jvp`` of ``grad``) 25.5 ms; the two agree to 4e-16. CUDA: not measured on this project's
#: machines, so the earlier default (forward-over-reverse) stays until a GPU reading says
#: otherwise
HVP_METHODS: dict[str, str] = {"cpu": "reverse-over-reverse", "cuda": "forward-over-reverse"}


def hvp_method(device: torch.device) -> str:
    """The Hessian-vector product used on ``device`` (:data:`HVP_METHODS`; others:
    forward-over-reverse)."""
    return HVP_METHODS.get(device.type, "forward-over-reverse")


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



def check_ntk_mode(mode: str, X2: torch.Tensor | None) -> None:
    """The NTK's ``mode`` is known, and a second batch ``X2`` only goes with ``full``."""
    if mode not in NTK_MODES:
        raise ConfigError(f"unknown NTK mode {mode!r}: choose one of {', '.join(NTK_MODES)}")
    if X2 is not None and mode != "full":
        raise ConfigError(f"mode={mode!r} is the kernel at (x_i, x_i): X2 must be None")


def _check_method(method: str) -> None:
    if method not in ("auto", "lanczos", "dense"):
        raise ConfigError(f"unknown method {method!r}: choose auto, lanczos or dense")


class Evaluation:
    """A network evaluated on the points ``X``, every quantity cached (the protocol).

    ``Evaluation(model, X, ...)`` returns a
    :class:`~bnstruct.diagnostics._chain_evaluation.ChainEvaluation` when the traced model is
    a positively homogeneous chain (and neither ``output`` nor ``layers`` is given), else a
    :class:`~bnstruct.diagnostics._module_evaluation.ModuleEvaluation`.

    Args:
        model: any ``nn.Module`` whose forward maps a batch ``X`` (``[N, ...]``) to
            ``[N, d_out]`` (or a tuple/dict: ``output``).
        X: the points (validated: finite, at least one row; chains: ``[N, d_in]``).
        dtype: compute dtype (float64 default; ``None`` keeps the model's).
        implementation: ``"auto"`` (default), ``"structured"`` or ``"autodiff"`` (module
            docstring); the resolved choice is :attr:`implementation`.
        output: the index/key (or a callable) of the tensor to analyze in the model's output.
        layers: module names whose outputs are the representations.
    """

    #: what the model is: "chain" or "module"
    kind: str
    implementation: str
    model: nn.Module
    #: picks the analyzed tensor out of the model's return value (``output=``)
    select: Callable[[Any], torch.Tensor]
    X: torch.Tensor
    dtype: torch.dtype
    model_dtype: torch.dtype
    device: torch.device

    def __new__(cls, model: nn.Module, X: Any, *, dtype: torch.dtype | None = torch.float64,
                implementation: str = "auto", output: Any = None,
                layers: Sequence[str] | None = None) -> Evaluation:
        if cls is not Evaluation:
            return super().__new__(cls)
        from ._chain_evaluation import ChainEvaluation
        from ._module_evaluation import ModuleEvaluation

        if implementation not in IMPLEMENTATIONS:
            raise ConfigError(f"unknown implementation {implementation!r}: choose one of "
                              f"{', '.join(IMPLEMENTATIONS)}")
        model = unwrap(model)
        if output is not None or layers is not None:
            why = ConfigError("the chain view is not used when output= or layers= is given")
        else:
            try:
                chain = parse_chain(model, dtype)
            except ConfigError as e:
                why = e
            else:
                chained = super().__new__(ChainEvaluation)
                chained.__dict__["_parsed"] = chain
                return chained
        if implementation == "structured":
            raise ConfigError(f"implementation='structured' needs a chain: {why}")
        general = super().__new__(ModuleEvaluation)
        general.__dict__["_chain_error"] = why
        return general

    # -- what the model is ---------------------------------------------------------------
    @property
    def is_chain(self) -> bool:
        """Whether the structured chain view applies (else: the general-model path)."""
        return self.kind == "chain"

    @property
    def chain_reason(self) -> str:
        """Why there is no chain view (``""`` for chains)."""
        return ""

    def require_chain(self) -> Chain:
        """The chain view; the parser's :class:`ConfigError` (naming the module) if none."""
        raise NotImplementedError

    @property
    def n_points(self) -> int:
        return self.X.shape[0]

    @cached_property
    def functional(self) -> Functional:
        """The model as a pure function of cast parameters (``torch.func`` paths)."""
        return Functional(self.model, self.dtype, self.select)

    # -- what each implementation provides -----------------------------------------------
    @property
    def d_out(self) -> int:
        raise NotImplementedError

    @property
    def output(self) -> torch.Tensor:
        """``f(X)``, ``[N, d_out]``, in the compute dtype."""
        raise NotImplementedError

    def representations(self, pre: bool = False) -> list[torch.Tensor]:
        raise NotImplementedError

    @property
    def rep_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def weight_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def weights(self) -> list[torch.Tensor]:
        raise NotImplementedError

    @property
    def biases(self) -> list[torch.Tensor | None]:
        """The bias of each weight layer (compute dtype), ``None`` where it has none."""
        raise NotImplementedError

    @property
    def param_norm2(self) -> float:
        r""":math:`\|\theta\|^2` (compute dtype)."""
        raise NotImplementedError

    @property
    def jacobian(self) -> torch.Tensor:
        r""":math:`Jf(x_i)`, ``[N, d_out, d_in]`` (input dimensions flattened)."""
        raise NotImplementedError

    def ntk(self, mode: str = "full", X2: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def ntk_matvec(self) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def _point_reps(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The representations of one point ``x`` (no batch axis), flattened."""
        raise NotImplementedError

    # -- shared by both ------------------------------------------------------------------
    @cached_property
    def rep_spectra(self) -> list[torch.Tensor]:
        """Singular values of each centered representation (``[N, n_l]``); representations of
        the same shape go through one batched SVD call."""
        from ..conventions import center

        return svdvals_list([center(A.reshape(A.shape[0], -1)) for A in self.representations()])

    @cached_property
    def weight_spectra(self) -> list[torch.Tensor]:
        """Singular values of every weight matrix (compute dtype), in layer order."""
        return [torch.linalg.svdvals(W) for W in self.weights]

    @cached_property
    def jacobian_svals(self) -> torch.Tensor:
        """Singular values of every ``Jf(x_i)``, ``[N, min(d_out, d_in)]``."""
        return svdvals(self.jacobian)

    def log_pdet(self, k: int) -> torch.Tensor:
        r""":math:`\log|Jf(x_i)|_k` per point (``-inf`` where the rank is below ``k``)."""
        J = self.jacobian
        return log_pdet_from_svals(self.jacobian_svals, k, (J.shape[1], J.shape[2]))

    @cached_property
    def jacobian_ranks(self) -> np.ndarray:
        """Numerical rank of every ``Jf(x_i)`` (``eps`` of the compute dtype)."""
        J, s = self.jacobian, self.jacobian_svals
        tol = max(J.shape[1:]) * torch.finfo(s.dtype).eps
        return (s > s[:, :1] * tol).sum(1).cpu().numpy()

    @cached_property
    def _by_args(self) -> dict[tuple[Any, ...], Any]:
        """Results of the methods with arguments, keyed by ``(method, *arguments)``."""
        return {}

    def layer_jacobian_ranks(self, points: int = 64) -> np.ndarray:
        """Max over the first ``points`` points of the numerical rank of the Jacobian of the
        input-to-representation map ``x -> h_l(x)`` (``[dim_l, d_in]``, ``eps`` of the
        compute dtype, numpy's rule), one per representation."""
        key = ("layer_jacobian_ranks", points)
        if key not in self._by_args:
            self._by_args[key] = self._layer_jacobian_ranks(points)
        out: np.ndarray = self._by_args[key]
        return out

    def _layer_jacobian_ranks(self, points: int) -> np.ndarray:
        from torch.func import jacfwd, vmap

        quiet_jvp_import()
        Xp = self.X[:points]
        ranks = np.zeros(len(self.rep_names), dtype=np.int64)
        chunk = max(1, 2**27 // max(1, sum(int(np.prod(r.shape[1:])) for r in
                                           self.representations()) * Xp[0].numel() * 8))
        for i in range(0, Xp.shape[0], chunk):
            Js = vmap(jacfwd(self._point_reps))(Xp[i:i + chunk])
            for l, J in enumerate(Js):
                J = J.reshape(J.shape[0], J.shape[1], -1)  # [points, dim_l, d_in]
                s = svdvals(J)
                tol = max(J.shape[1:]) * torch.finfo(s.dtype).eps
                r = (s > s[:, :1] * tol).sum(1) if s.shape[1] else torch.zeros(1)
                ranks[l] = max(ranks[l], int(r.max()))
        return ranks

    def ntk_max_eig(self, method: str = "auto", tol: float = 1e-10, seed: int = 0) -> float:
        """Largest eigenvalue of the ``N d_out x N d_out`` matrix ``Theta(X, X)`` (see
        :func:`bnstruct.ntk_max_eig`); cached per ``(method, tol, seed)``."""
        _check_method(method)
        key = ("ntk_max_eig", method, tol, seed)
        if key not in self._by_args:
            N, d = self.n_points, self.d_out
            n = N * d
            if method == "dense" or (method == "auto" and n <= NTK_DENSE_MAX):
                M = self.ntk("full").permute(0, 2, 1, 3).reshape(n, n)
                self._by_args[key] = float(torch.linalg.eigvalsh((M + M.T) / 2)[-1])
            else:
                mv = self.ntk_matvec()

                @torch.no_grad()
                def flat(v: torch.Tensor) -> torch.Tensor:
                    return mv(v.reshape(N, d)).reshape(-1)
                self._by_args[key] = top_eig(flat, n, dtype=self.dtype, device=self.device,
                                             tol=tol, seed=seed)
        out: float = self._by_args[key]
        return out

    # -- chain-only quantities: the parser's error elsewhere -----------------------------
    @property
    def balance(self) -> torch.Tensor:
        """Balancedness residual per hidden layer (``[L-1]``); chains only."""
        raise self._no_chain()

    def bound(self, k: int) -> pd.DataFrame:
        """Both sides of the bottleneck inequality per point; chains only."""
        raise self._no_chain()

    def check_k(self, k: object) -> int:
        """``k`` must be an integer with ``0 <= k <= min(sizes)``; chains only."""
        raise self._no_chain()

    def _no_chain(self) -> ConfigError:
        return ConfigError(self.chain_reason)

    def conv_operator_spectra(self) -> list[torch.Tensor | str]:
        """Per weight layer: singular values of a convolution as an operator on its input
        grid with circular padding, or why none (chains: no convolutions)."""
        return ["not a convolution"] * len(self.weights)

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

    @property
    def hvp_method(self) -> str:
        """The Hessian-vector product :meth:`hessian_max_eig` uses (:data:`HVP_METHODS`)."""
        return hvp_method(self.device)

    def hessian_max_eig(self, Y: torch.Tensor, lam: float, method: str = "auto",
                        tol: float = 1e-10, seed: int = 0) -> float:
        """Top Hessian eigenvalue of the regularized objective (see
        :func:`bnstruct.hessian_max_eig`); always ``torch.func``, the product named by
        :attr:`hvp_method`."""
        _check_method(method)
        if not isinstance(lam, int | float) or isinstance(lam, bool) or not lam >= 0:
            raise ConfigError(f"lam must be a number >= 0, got {lam!r}")
        Yc = self.check_Y(Y)
        fn, theta0 = self.functional.objective(self.X, Yc, float(lam))
        hvp = hvp_function(fn, theta0, self.hvp_method)
        n = theta0.numel()
        if method == "dense" or (method == "auto" and n <= DENSE_MAX):
            return dense_top_eig(hvp, n, dtype=theta0.dtype, device=theta0.device)
        return top_eig(hvp, n, dtype=theta0.dtype, device=theta0.device, tol=tol, seed=seed)


def hvp_function(fn: Callable[[torch.Tensor], torch.Tensor], theta0: torch.Tensor,
                 method: str) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""``v -> H v`` with :math:`H = \nabla^2 fn(\theta_0)` (``theta0`` flat, ``[P]``):
    ``"forward-over-reverse"`` (``jvp`` of ``grad``) or ``"reverse-over-reverse"`` (``vjp``
    of ``grad``, the gradient's graph built once and reused for every product)."""
    from torch.func import grad, jvp, vjp

    g = grad(fn)
    if method == "forward-over-reverse":
        quiet_jvp_import()

        def fwd(v: torch.Tensor) -> torch.Tensor:
            return jvp(g, (theta0,), (v,))[1]
        return fwd
    if method != "reverse-over-reverse":
        raise ConfigError(f"unknown Hessian-vector product {method!r}: choose "
                          "forward-over-reverse or reverse-over-reverse")
    pull = vjp(g, theta0)[1]

    def rev(v: torch.Tensor) -> torch.Tensor:
        return pull(v)[0]
    return rev
