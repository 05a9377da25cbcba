r"""Derivatives of any ``nn.Module`` through ``torch.func``: the production path for models
that are not chains, and for ``implementation="autodiff"`` on chains.

A :class:`Functional` evaluates ``model`` with :func:`torch.func.functional_call` at its
parameters and floating-point buffers cast to the compute dtype, in eval mode (the user's
train/eval flags are restored afterwards), and flattens the output to ``[N, d_out]``. Memory:

- models whose every parameter is the weight or bias of a Linear/Conv layer run once, with
  independent points (:class:`_Layerwise`): the input Jacobian and the NTK trace from one
  backward pass per output over the batch (no per-point parameter Jacobian), NTK-vector
  products from one backward pass to the layer outputs, the layers' inputs (patches) and a
  linearized forward (memory O(patches + activations));
- otherwise: the input Jacobian ``[N, d_out, d_in]`` by ``vmap(jacrev)`` over the points;
  NTK ``trace``/``diag``: per-point parameter Jacobians ``[c, d_out, P]`` for chunks of ``c``
  points (``c d_out P`` at most :data:`CHUNK_BYTES`), never all ``N`` at once; NTK-vector
  products :math:`\Theta v = J_\theta (J_\theta^T v)` by one ``vjp`` and one ``jvp``
  (memory O(P + activations));
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
        #: how the last NTK trace was computed (set by :meth:`ntk`)
        self.trace_method = ""
        #: how NTK-vector products are taken (set by :meth:`ntk_matvec`)
        self.matvec_method = ""
        #: how the input Jacobian was computed (set by :meth:`jacobian`)
        self.jacobian_method = ""
        self._layerwise_key: torch.Tensor | None = None
        self._layerwise: _Layerwise | None = None

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
        r""":math:`\partial f(x_i) / \partial x`, ``[N, d_out, d_in]`` (input dims flattened):
        :meth:`_Layerwise.jacobian` where the model qualifies, else ``vmap(jacrev)`` over the
        points (:attr:`jacobian_method` names the one used)."""
        lw = self.layerwise(X)
        if lw is not None:
            d_out = int(lw.out.shape[1])
            Jl = lw.jacobian(d_out)
            if Jl is not None:
                self.jacobian_method = ("one backward pass per output over the batch (shared "
                                        "with the NTK trace)")
                return Jl
        self.jacobian_method = "vmap over points of jacrev"
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

    def layerwise(self, X: torch.Tensor) -> _Layerwise | None:
        """The :class:`_Layerwise` view of ``self(params, X)`` (cached for the last ``X``), or
        ``None`` when the model does not qualify (its docstring)."""
        if self._layerwise_key is not X:
            self._layerwise_key, self._layerwise = X, _Layerwise.build(self, X)
        return self._layerwise

    def ghost_trace(self, X: torch.Tensor, d_out: int) -> torch.Tensor | None:
        r"""Exact :math:`\mathrm{tr}\,\Theta(x_i, x_i)` from per-layer gradient norms
        (:meth:`_Layerwise.trace`), or ``None`` when the model does not qualify."""
        lw = self.layerwise(X)
        return None if lw is None else lw.trace(d_out)

    def ntk(self, X: torch.Tensor, X2: torch.Tensor | None, mode: str, d_out: int
            ) -> torch.Tensor:
        r"""Empirical NTK :math:`J_\theta f(x) J_\theta f(x')^T`: ``full``
        ``[N, N2, d_out, d_out]``, ``trace`` ``[N]`` (:meth:`ghost_trace` when the model
        qualifies), ``diag`` ``[N, d_out, d_out]``."""
        if mode == "trace":
            fast = self.ghost_trace(X, d_out)
            self.trace_method = ("ghost-norm: one backward pass per output, per-point "
                                 "gradient norms of Linear/Conv layers (direct or Gram)"
                                 if fast is not None
                                 else "per-point parameter Jacobians in chunks of points")
            if fast is not None:
                return fast
            return torch.cat([j.pow(2).sum((1, 2)) for j in self._chunks(X, d_out)])
        if mode == "diag":
            return torch.cat([j @ j.transpose(1, 2) for j in self._chunks(X, d_out)])
        J1 = torch.cat(list(self._chunks(X, d_out)))
        J2 = J1 if X2 is None else torch.cat(list(self._chunks(X2, d_out)))
        N, N2 = J1.shape[0], J2.shape[0]
        K = J1.reshape(N * d_out, -1) @ J2.reshape(N2 * d_out, -1).T
        return K.view(N, d_out, N2, d_out).permute(0, 2, 1, 3).contiguous()

    def ntk_matvec(self, X: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        r"""``v [N, d_out] -> Theta(X, X) v`` as :math:`J (J^T v)`, never the Jacobian:
        :meth:`_Layerwise.matvec` where the model qualifies, else ``vjp`` then ``jvp``
        (:attr:`matvec_method` names the one used)."""
        lw = self.layerwise(X)
        if lw is not None:
            self.matvec_method = ("layerwise: one backward pass to the Linear/Conv outputs, "
                                  "J^T v from their inputs, J u by a linearized forward")
            return lw.matvec
        self.matvec_method = "vjp then jvp (torch.func)"
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


class _Layer:
    r"""One weight layer in row form: ``U`` ``[N P, K]`` holds its inputs at its ``P`` output
    positions (a Linear's input rows; a convolution's patches, ``K = C_in prod(k)`` in the
    order of ``weight.reshape(out, -1)``), so that its output is ``U W^T + b`` in rows
    ``[N P, out]``; :meth:`rows` / :meth:`unrows` convert the layer's output layout."""

    def __init__(self, name: str, m: nn.Module, A: torch.Tensor, z: torch.Tensor):
        self.name, self.N, self.shape = name, z.shape[0], z.shape
        self.conv = isinstance(m, nn.Conv1d | nn.Conv2d)
        self.has_bias = getattr(m, "bias", None) is not None
        self.U = _patches(m, A) if self.conv else A.reshape(-1, A.shape[-1])
        self.P = self.U.shape[0] // self.N
        self.K = self.U.shape[1]
        self.O = z.shape[1] if self.conv else z.shape[-1]
        if self.P * self.O * self.N != z.numel():  # pragma: no cover - guarded by build
            raise RuntimeError(f"layer {name}: patches do not match the output")

    def rows(self, d: torch.Tensor) -> torch.Tensor:
        """An output-shaped tensor as rows ``[N P, out]``."""
        if self.conv:
            return d.reshape(self.N, self.O, self.P).transpose(1, 2).reshape(-1, self.O)
        return d.reshape(-1, self.O)

    def unrows(self, t: torch.Tensor) -> torch.Tensor:
        if self.conv:
            return t.reshape(self.N, self.P, self.O).transpose(1, 2).reshape(self.shape)
        return t.reshape(self.shape)


def _patches(m: nn.Module, A: torch.Tensor) -> torch.Tensor:
    """Patches of a zero-padded Conv1d/2d input as rows ``[N Ho Wo, C k_h k_w]`` (a strided
    view and one copy; ``F.unfold``'s order)."""
    import torch.nn.functional as F

    assert isinstance(m, nn.Conv1d | nn.Conv2d)
    k, st, dl = list(m.kernel_size), list(m.stride), list(m.dilation)
    pd = [int(p) for p in m.padding]
    if isinstance(m, nn.Conv1d):  # as a Conv2d on a 1 x L grid
        A = A[:, :, None, :]
        k, st, pd, dl = [1, *k], [1, *st], [0, *pd], [1, *dl]
    A = F.pad(A, (pd[1], pd[1], pd[0], pd[0]))
    for dim in (2, 3):
        span = dl[dim - 2] * (k[dim - 2] - 1) + 1
        A = A.unfold(dim, span, st[dim - 2])  # [N, C, Ho, Wo, span_h(, span_w)]
    A = A[..., ::dl[0], ::dl[1]]  # [N, C, Ho, Wo, k_h, k_w]
    N, C, Ho, Wo = A.shape[:4]
    return A.permute(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, C * k[0] * k[1])


class _Layerwise:
    r"""NTK trace and NTK-vector products of a model whose every parameter is the weight or
    bias of an ``nn.Linear``, ``nn.Conv1d`` or ``nn.Conv2d`` (zero padding, groups 1) run once
    on the batch, with the points processed independently (checked on two points).

    With :math:`U_\ell` the layer's inputs at its output positions (:class:`_Layer`),
    :math:`z_\ell = U_\ell W_\ell^T + b_\ell` its output and
    :math:`\delta_\ell(v) = \partial \langle v, f(X) \rangle / \partial z_\ell` (one backward
    pass from the output to the layer outputs, no parameter gradients):

    - :math:`J^T v`: :math:`\nabla_{W_\ell} = \delta_\ell^T U_\ell`,
      :math:`\nabla_{b_\ell} = \sum_{\text{rows}} \delta_\ell`;
    - :math:`J u`: the forward-mode derivative of :math:`f` with respect to additive
      perturbations of the :math:`z_\ell` (``torch.func.linearize``: traced once, no primal
      recomputation per product) in the direction :math:`U_\ell \,dW_\ell^T + db_\ell`;
    - :math:`\mathrm{tr}\,\Theta(x_i, x_i) = \sum_a \sum_\ell \|\Delta_{\ell,i}^{a\,T}
      U_{\ell,i}\|_F^2 + \|\sum_p \delta^a_{\ell,i,p}\|^2` (point ``i``'s rows; one backward
      pass per output ``a``), each layer contracted directly or through the Gram matrices
      :math:`\langle \Delta^T\Delta, U U^T \rangle` (``[P, P]`` per point), whichever costs
      fewer flops.

    Memory: the patches (``N P K`` per layer) and two sets of activations; never a
    per-point parameter Jacobian."""

    def __init__(self, f: Functional, X: torch.Tensor, layers: list[_Layer],
                 es: list[torch.Tensor], out: torch.Tensor):
        self.f, self.X, self.layers, self.es, self.out = f, X, layers, es, out
        self._jvp: Callable[..., torch.Tensor] | None = None
        self._sweep: tuple[torch.Tensor | None, torch.Tensor] | None = None

    @staticmethod
    def build(f: Functional, X: torch.Tensor) -> _Layerwise | None:
        mods = {n: m for n, m in f.model.named_modules()
                if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)}
        if any(isinstance(m, nn.Conv1d | nn.Conv2d) and (
                m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str))
               for m in mods.values()):
            return None
        owned = {f"{n}.{k}" for n, m in mods.items() for k in ("weight", "bias")
                 if getattr(m, k, None) is not None}
        if owned != set(f.params):  # other parameters, or tied weights
            return None
        if X.shape[0] > 1:  # the points must not interact (e.g. batch statistics)
            with torch.no_grad():
                both = f(f.params, X[:2])
                one = torch.cat([f(f.params, X[:1]), f(f.params, X[1:2])])
            scale = float(both.abs().max()) + torch.finfo(both.dtype).tiny
            if float((both - one).abs().max()) > 1e3 * torch.finfo(both.dtype).eps * scale:
                return None
        saved: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in mods}

        def hook(name: str) -> Callable[..., torch.Tensor]:
            def h(_m: nn.Module, a: tuple[torch.Tensor, ...], o: torch.Tensor) -> torch.Tensor:
                e = torch.zeros_like(o, requires_grad=True)
                saved[name].append((a[0].detach(), e))
                return o + e
            return h
        handles = [m.register_forward_hook(hook(n)) for n, m in mods.items()]
        Xg = X.detach().requires_grad_(X.is_floating_point())
        try:
            with torch.enable_grad():
                out = f(f.params, Xg)
        finally:
            for hd in handles:
                hd.remove()
        if any(len(v) != 1 for v in saved.values()):
            return None
        names = list(saved)
        layers = [_Layer(n, mods[n], saved[n][0][0], saved[n][0][1]) for n in names]
        return _Layerwise(f, Xg, layers, [saved[n][0][1] for n in names], out)

    def _deltas(self, v: torch.Tensor, with_input: bool = False
                ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """:math:`\\delta_\\ell(v)` in rows ``[N P, out]`` for every layer (``v [N, d_out]``),
        and with ``with_input`` the gradient of :math:`\\langle v, f(X) \\rangle` in ``X``."""
        wrt = [*self.es, self.X] if with_input else self.es
        with torch.enable_grad():
            ds = torch.autograd.grad(self.out, wrt, v, retain_graph=True, allow_unused=True)
        gx = (torch.zeros_like(self.X) if ds[-1] is None else ds[-1]) if with_input else None
        return [L.rows(torch.zeros_like(e) if d is None else d)
                for L, d, e in zip(self.layers, ds, self.es, strict=False)], gx

    def trace(self, d_out: int) -> torch.Tensor:
        """:math:`\\mathrm{tr}\\,\\Theta(x_i, x_i)`, ``[N]`` (class docstring)."""
        return self.sweep(d_out)[1]

    def jacobian(self, d_out: int) -> torch.Tensor | None:
        """The input Jacobian ``[N, d_out, d_in]`` from the trace's backward passes (the
        points are independent, so the batch gradient of output ``a`` holds every
        :math:`\\partial f_a(x_i) / \\partial x_i`); ``None`` for a non-float ``X``."""
        return self.sweep(d_out)[0]

    def sweep(self, d_out: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One backward pass per output: ``(input Jacobian or None, NTK trace)``, cached."""
        if self._sweep is None:
            self._sweep = self._run_sweep(d_out)
        return self._sweep

    def _run_sweep(self, d_out: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        N = self.X.shape[0]
        with_input = self.X.requires_grad
        J = (torch.empty(N, d_out, self.X[0].numel(), dtype=self.X.dtype, device=self.X.device)
             if with_input else None)
        tr = torch.zeros(N, dtype=self.out.dtype, device=self.out.device)
        gram = [d_out * L.O * L.P ** 2 + L.P ** 2 * L.K < d_out * L.O * L.P * L.K
                for L in self.layers]
        S = [None if not g else torch.zeros(N, L.P, L.P, dtype=tr.dtype, device=tr.device)
             for L, g in zip(self.layers, gram, strict=True)]
        v = torch.zeros_like(self.out)
        for a in range(d_out):
            v.zero_()
            v[:, a] = 1.0
            ds, gx = self._deltas(v, with_input)
            if J is not None and gx is not None:
                J[:, a] = gx.reshape(N, -1)
            for L, D, Sl in zip(self.layers, ds, S, strict=True):
                Dp = D.view(N, L.P, L.O)
                if Sl is not None:
                    Sl.baddbmm_(Dp, Dp.transpose(1, 2))
                else:
                    tr += torch.bmm(Dp.transpose(1, 2), L.U.view(N, L.P, L.K)).pow(2).sum((1, 2))
                if L.has_bias:
                    tr += Dp.sum(1).pow(2).sum(1)
        for L, Sl in zip(self.layers, S, strict=True):
            if Sl is not None:
                Uv = L.U.view(N, L.P, L.K)
                tr += (Sl * torch.bmm(Uv, Uv.transpose(1, 2))).sum((1, 2))
        return (None if J is None else J.detach()), tr.detach()

    def _jvp_fn(self) -> Callable[..., torch.Tensor]:
        if self._jvp is None:
            from torch.func import linearize

            f, mods = self.f, dict(self.f.model.named_modules())

            def g(*es: torch.Tensor) -> torch.Tensor:
                handles = [mods[L.name].register_forward_hook(
                    lambda _m, _a, o, e=e: o + e) for L, e in zip(self.layers, es, strict=True)]
                try:
                    return f(f.params, self.X.detach())
                finally:
                    for hd in handles:
                        hd.remove()
            quiet_jvp_import()
            with warnings.catch_warnings():  # torch's constant folding of the traced graph
                warnings.filterwarnings("ignore", message=r".*get_attr Node with no underlying",
                                        category=UserWarning)
                self._jvp = linearize(g, *[torch.zeros_like(e).detach() for e in self.es])[1]
        return self._jvp

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`\\Theta(X, X) v = J (J^T v)`, ``v [N, d_out]``."""
        tangents = []
        for L, D in zip(self.layers, self._deltas(v)[0], strict=True):
            gW = D.T @ L.U  # [out, K]: this layer's part of J^T v
            T = L.U @ gW.T
            if L.has_bias:
                T = T + D.sum(0)
            tangents.append(L.unrows(T))
        return self._jvp_fn()(*tangents).detach()
