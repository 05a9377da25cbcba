r"""Derivatives of any ``nn.Module`` through ``torch.func``: the production path for models
that are not chains, and for ``implementation="autodiff"`` on chains.

A :class:`Functional` evaluates ``model`` with :func:`torch.func.functional_call` at its
parameters and floating-point buffers cast to the compute dtype, in eval mode (the user's
train/eval flags are restored afterwards), and flattens the output to ``[N, d_out]``. Memory:

- the input Jacobian ``[N, d_out, d_in]`` by ``vmap(jacrev)`` over the points;
- NTK ``trace``/``diag``: per-point parameter Jacobians ``[c, d_out, P]`` for chunks of ``c``
  points (``c d_out P`` at most :data:`CHUNK_BYTES`), never all ``N`` at once;
- NTK-vector products :math:`\Theta v = J_\theta (J_\theta^T v)` by one ``vjp`` and one
  ``jvp`` (memory O(P + activations));
- NTK ``full`` needs the ``[N d_out, P]`` parameter Jacobian (small models only).

These are independent of the tests' brute-force references (:mod:`.reference`), which
production code never imports.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ..errors import ConfigError

__all__ = ["quiet_jvp_import", "eval_mode", "Functional", "CHUNK_BYTES"]

#: budget of one chunk of per-point parameter Jacobians (NTK trace/diag)
CHUNK_BYTES = 2**28


@functools.cache
def quiet_jvp_import() -> None:
    """Import torch's jvp decompositions with their deprecation warning silenced.

    ``torch.func.jvp`` imports them on first use, which calls the deprecated
    ``torch.jit.script`` and warns (a torch-internal matter the caller cannot fix; it would
    fail test suites running with warnings as errors). Call before the first ``jvp``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*",
                                category=DeprecationWarning)
        try:
            import torch._decomp.decompositions_for_jvp  # noqa: F401
        except ImportError:  # pragma: no cover - other torch versions
            pass


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model.eval()`` (Dropout off, BatchNorm on its running
    statistics), then restore every submodule's own ``training`` flag."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, t in modes:
            m.training = t


class Functional:
    """``model`` as a pure function of its (cast) parameters and a batch ``X``.

    ``params``: ``{name: detached parameter in dtype}``; ``buffers`` likewise (floating ones
    cast). ``select(out)`` picks the output tensor when the model returns a tuple or dict
    (``None``: the output itself)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None,
                 select: Callable[[object], torch.Tensor] | None = None):
        self.model = model
        self.params = {k: (v.detach() if dtype is None else v.detach().to(dtype))
                       for k, v in model.named_parameters()}
        if not self.params:
            raise ConfigError(f"{type(model).__name__} has no parameters")
        self.buffers = {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point()
                            else v.detach()) for k, v in model.named_buffers()}
        self.select = select
        self.n_params = sum(p.numel() for p in self.params.values())

    def __call__(self, params: dict[str, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
        """``f(X)`` flattened to ``[N, d_out]``."""
        with eval_mode(self.model):
            out = functional_call(self.model, (params, self.buffers), (X,))
        if self.select is not None:
            out = self.select(out)
        return out.reshape(X.shape[0], -1)

    def single(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``f(x)`` of one point, ``[d_out]`` (for ``vmap`` over the points)."""
        return self(params, x[None])[0]

    # -- input Jacobian ------------------------------------------------------------------
    def jacobian(self, X: torch.Tensor) -> torch.Tensor:
        r""":math:`\partial f(x_i) / \partial x`, ``[N, d_out, d_in]`` (input dims flattened)."""
        J = vmap(jacrev(self.single, argnums=1), (None, 0))(self.params, X)
        return J.reshape(J.shape[0], J.shape[1], -1)

    # -- parameter Jacobians and the NTK -------------------------------------------------
    def _param_jacobian(self, X: torch.Tensor) -> torch.Tensor:
        """Per-point parameter Jacobian ``[n, d_out, P]`` of the points ``X``."""
        jac = vmap(jacrev(self.single), (None, 0))(self.params, X)
        n = X.shape[0]
        return torch.cat([jac[k].reshape(n, jac[k].shape[1], -1) for k in self.params], dim=2)

    def _chunks(self, X: torch.Tensor, d_out: int) -> Iterator[torch.Tensor]:
        per_point = max(1, d_out * self.n_params * X.element_size())
        c = max(1, CHUNK_BYTES // per_point)
        for i in range(0, X.shape[0], c):
            yield self._param_jacobian(X[i:i + c])

    def ntk(self, X: torch.Tensor, X2: torch.Tensor | None, mode: str, d_out: int
            ) -> torch.Tensor:
        r"""Empirical NTK :math:`J_\theta f(x) J_\theta f(x')^T`: ``full``
        ``[N, N2, d_out, d_out]``, ``trace`` ``[N]``, ``diag`` ``[N, d_out, d_out]``."""
        if mode == "trace":
            return torch.cat([j.pow(2).sum((1, 2)) for j in self._chunks(X, d_out)])
        if mode == "diag":
            return torch.cat([j @ j.transpose(1, 2) for j in self._chunks(X, d_out)])
        J1 = torch.cat(list(self._chunks(X, d_out)))
        J2 = J1 if X2 is None else torch.cat(list(self._chunks(X2, d_out)))
        N, N2 = J1.shape[0], J2.shape[0]
        K = J1.reshape(N * d_out, -1) @ J2.reshape(N2 * d_out, -1).T
        return K.view(N, d_out, N2, d_out).permute(0, 2, 1, 3).contiguous()

    def ntk_matvec(self, X: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        r"""``v [N, d_out] -> Theta(X, X) v`` as :math:`J (J^T v)` (``vjp`` then ``jvp``;
        never the Jacobian)."""
        quiet_jvp_import()

        def fp(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return self(p, X)

        pullback = vjp(fp, self.params)[1]

        def mv(v: torch.Tensor) -> torch.Tensor:
            (ct,) = pullback(v)
            return jvp(fp, (self.params,), (ct,))[1]
        return mv

    # -- the regularized objective -------------------------------------------------------
    def objective(self, X: torch.Tensor, Y: torch.Tensor, lam: float
                  ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
        r""":math:`\frac1N \sum_i \|f(x_i) - y_i\|^2 + \lambda \|\theta\|^2` as a function of
        the flat parameter vector; returns ``(fn, theta0)``."""
        names = list(self.params)
        shapes = [self.params[k].shape for k in names]
        sizes = [self.params[k].numel() for k in names]
        theta0 = torch.cat([self.params[k].reshape(-1) for k in names])
        N = X.shape[0]
        Yf = Y.reshape(N, -1)

        def fn(theta: torch.Tensor) -> torch.Tensor:
            p = {k: t.reshape(s) for k, t, s in
                 zip(names, torch.split(theta, sizes), shapes, strict=True)}
            r = self(p, X) - Yf
            return r.pow(2).sum() / N + lam * theta.pow(2).sum()
        return fn, theta0
