r"""The stacked kernel: ``B`` feed-forward networks of one shape as stacked tensors, one
batched matmul per layer and a hand-written backward pass.

Layer ``l``'s weights are one tensor ``W_l [B, n_l, n_{l-1}]`` (biases ``b_l [B, n_l]``), and
the forward pass is one ``torch.baddbmm`` per layer (bias included) on feature-major
activations ``[B, n_l, n]``. The gradient (:meth:`StackedNet.loss_and_grad`) is the backward
pass of the chain written out (``g_L = 2 (z_L - y) / n``; ``dW_l = g_l a_{l-1}^T``,
``db_l = g_l 1``, ``g_{l-1} = (W_l^T g_l) * [a_{l-1} > 0]``) into buffers allocated once per
batch size (``out=`` arguments, in-place ReLU and mask): no autograd graph, no per-step
allocation. The reference is autograd (the tests compare the two in float64).

**The same bits whatever the batch.** Network ``b``'s arithmetic does not depend on ``B`` or
on its row: every matmul computes its rows separately (checked by the tests), and every
elementwise update runs over :attr:`StackedNet.flat`, whose length is padded to a multiple of
:data:`PAD` so that no real entry falls in the scalar tail of a vectorized kernel (PyTorch's
CPU kernels, the fused optimizers included, handle the last ``numel mod (vector width)``
entries with scalar code, which may round differently: unpadded, the last network's output
bias drifted by one ulp per step, and chaos did the rest). The padding stays zero: its
gradient is zero, so Adam and SGD keep it zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import ConfigError
from ..models import FeedForward

__all__ = ["StackedNet", "PAD"]

#: :attr:`StackedNet.flat` is padded to a multiple of this many entries (more than twice the
#: widest vector of any CPU kernel: 16 float32 in AVX-512, unrolled twice)
PAD = 64


class StackedNet:
    """``B`` networks of one shape as stacked tensors ``[W_1, b_1, ..., W_L, b_L]``:
    ``W_l [B, n_l, n_{l-1}]``, ``b_l [B, n_l]`` (``nn.Linear`` layout per network).

    They are the pieces of one flat leaf tensor :attr:`flat` (parameter after parameter,
    each piece ``[B, *shape]`` contiguous), split in every forward pass, so the backward pass
    assembles ``flat.grad`` in one ``cat`` and the optimizer, the weight decay and the
    learning-rate scaling are a few operations on one tensor instead of a few per layer.
    :meth:`per_network` spreads a per-network value ``[B]`` over that layout."""

    def __init__(self, models: Sequence[FeedForward]) -> None:
        m0 = models[0]
        for m in models:
            if m.sizes != m0.sizes or m.activation != m0.activation:
                raise ConfigError("networks trained in one batch must have the same layer "
                                  f"sizes and activation: {m.sizes} {m.activation} vs "
                                  f"{m0.sizes} {m0.activation}")
            if [b is None for b in m.biases()] != [b is None for b in m0.biases()]:
                raise ConfigError("networks trained in one batch must all have biases or none")
        self.sizes, self.activation = list(m0.sizes), m0.activation
        self.bias = m0.biases()[0] is not None
        self.names = [k for k, _ in m0.named_parameters()]
        self.shapes = [tuple(p.shape) for p in m0.parameters()]
        with torch.no_grad():
            self._build([torch.stack([dict(m.named_parameters())[k].detach() for m in models])
                         for k in self.names])

    def _build(self, blocks: list[torch.Tensor]) -> None:
        """Make :attr:`flat` from per-parameter stacks ``[B, *shape]``, its gradient buffer
        ``flat.grad`` (written whole by every :meth:`loss_and_grad`) and no step buffers
        yet."""
        self.B = blocks[0].shape[0]
        self.flat = self.pack(blocks)
        self.flat.grad = torch.zeros_like(self.flat)
        self._plans: dict[int, _StepPlan] = {}
        self._scratch: torch.Tensor | None = None
        self._xt: tuple[torch.Tensor, torch.Tensor] | None = None
        self._yt: tuple[torch.Tensor, torch.Tensor] | None = None

    def scratch(self) -> torch.Tensor:
        """A buffer like :attr:`flat` (kept; for the per-network learning-rate scaling)."""
        if self._scratch is None:
            self._scratch = torch.empty_like(self.flat)
        return self._scratch

    @property
    def size(self) -> int:
        return self.B

    def blocks(self, t: torch.Tensor, B: int | None = None) -> list[torch.Tensor]:
        """Views of a tensor laid out as :attr:`flat` as per-parameter ``[B, *shape]``."""
        B = self.size if B is None else B
        sizes = [B * math.prod(s) for s in self.shapes]
        return [c.view(B, *s) for c, s in zip(t[:sum(sizes)].split(sizes), self.shapes,
                                               strict=True)]

    @property
    def params(self) -> list[torch.Tensor]:
        """The per-parameter pieces ``[B, *shape]`` of :attr:`flat` (views)."""
        return self.blocks(self.flat)

    @staticmethod
    def pack(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-parameter blocks as one flat tensor, zero-padded to a multiple of
        :data:`PAD` entries (see the module docstring)."""
        n = sum(b.numel() for b in blocks)
        return torch.cat([*(b.reshape(-1) for b in blocks), blocks[0].new_zeros((-n) % PAD)])

    def per_network(self, v: torch.Tensor) -> torch.Tensor:
        """``v [B]`` repeated over the layout of :attr:`flat`."""
        return self.pack([v.view(-1, *([1] * len(s))).expand(-1, *s) for s in self.shapes])

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X [n, d_in]`` (shared) or ``[B, n, d_in]`` -> outputs ``[B, n, d_out]``.

        Computed feature-major (activations ``[B, n_l, n]``, ``h_l = W_l h_{l-1} + b_l``), so
        the weight gradients come out in ``nn.Linear``'s layout with no transposed copy; the
        result is a transposed view."""
        B = self.size
        h = X.T.expand(B, *X.T.shape) if X.dim() == 2 else X.transpose(1, 2)
        params = self.params
        step = 2 if self.bias else 1
        L = len(params) // step
        for l in range(L):
            W = params[step * l]
            if self.bias:
                h = torch.baddbmm(params[step * l + 1].unsqueeze(2), W, h)
            else:
                h = torch.bmm(W, h)
            if l < L - 1 and self.activation == "relu":
                h = torch.relu(h)
        return h.transpose(1, 2)

    __call__ = forward

    def _feature_major(self, T: torch.Tensor, which: str) -> torch.Tensor:
        """``T [n, d]`` -> ``T^T [d, n]`` contiguous, cached while ``T`` is the same tensor
        (full-batch data); ``[B, n, d]`` -> the transposed view ``[B, d, n]``."""
        if T.dim() == 3:
            return T.transpose(1, 2)
        cache = self._xt if which == "x" else self._yt
        if cache is not None and cache[0] is T:
            return cache[1]
        out = (T, T.T.contiguous())
        if which == "x":
            self._xt = out
        else:
            self._yt = out
        return out[1]

    def _plan(self, n: int) -> _StepPlan:
        """Buffers and views of one step on ``n`` points, made once per ``(B, n)``."""
        if n not in self._plans:
            self._plans[n] = _StepPlan(self, n)
        return self._plans[n]

    @torch.no_grad()
    def loss_and_grad(self, X: torch.Tensor, Y: torch.Tensor, loss: torch.Tensor) -> None:
        r"""Each network's data term :math:`\sum_i \|f_b(x_i) - y_i\|^2 / n` into ``loss
        [B]`` and its gradient into ``flat.grad`` (every entry overwritten; no penalty: that
        is the optimizer's weight decay). ``X [n, d_in]`` (shared by all networks) or ``[B,
        n, d_in]``, ``Y`` likewise.

        Forward, feature-major: ``z_l = W_l a_{l-1} + b_l`` (one ``baddbmm``; the first
        layer on shared data is one ``addmm`` over all networks' rows ``[B n_1, d_in]``),
        ``a_l = relu(z_l)`` in place. Backward: ``g_L = 2 (z_L - y) / n``;
        ``dW_l = g_l a_{l-1}^T``, ``db_l = sum_i g_l[:, i]``,
        ``g_{l-1} = (W_l^T g_l) * [a_{l-1} > 0]`` (``[z > 0] = [relu(z) > 0]``, the mask
        autograd's ReLU backward uses), each written into its buffer by ``out=``."""
        n = X.shape[-2]
        pl = self._plan(n)
        L, acts, grads = pl.L, pl.acts, pl.grads
        W, WT, bcol, dW, db = pl.W, pl.WT, pl.bcol, pl.dW, pl.db
        shared = X.dim() == 2
        xt = self._feature_major(X, "x")
        relu = self.activation == "relu"
        # forward
        if shared:  # one matmul for all networks' first layers
            if pl.b0 is not None:
                torch.addmm(pl.b0, pl.W0, xt, out=pl.z0)
            else:
                torch.mm(pl.W0, xt, out=pl.z0)
        elif bcol[0] is not None:
            torch.baddbmm(bcol[0], W[0], xt, out=acts[0])
        else:
            torch.bmm(W[0], xt, out=acts[0])
        for l in range(1, L):
            if relu:
                acts[l - 1].relu_()
            bl = bcol[l]
            if bl is not None:
                torch.baddbmm(bl, W[l], acts[l - 1], out=acts[l])
            else:
                torch.bmm(W[l], acts[l - 1], out=acts[l])
        # loss and g_L
        err = acts[L - 1]
        err.sub_(self._feature_major(Y, "y"))
        torch.sum(torch.mul(err, err, out=pl.sq), dim=(1, 2), out=loss)
        loss.div_(n)
        g = err.mul_(2.0 / n)
        # backward
        for l in range(L - 1, 0, -1):
            torch.bmm(g, pl.actsT[l - 1], out=dW[l])
            dbl = db[l]
            if dbl is not None:
                torch.sum(g, dim=2, out=dbl)
            gp = grads[l - 1]
            torch.bmm(WT[l], g, out=gp)
            if relu:
                torch.ops.aten.threshold_backward.grad_input(gp, acts[l - 1], 0.0,
                                                             grad_input=gp)
            g = gp
        if shared:
            torch.mm(g.view(pl.z0.shape), X, out=pl.dW0)
        else:
            torch.bmm(g, X, out=dW[0])
        if db[0] is not None:
            torch.sum(g, dim=2, out=db[0])

    def norm2(self) -> torch.Tensor:
        r""":math:`\|\theta_b\|^2` per network, ``[B]``."""
        return torch.stack([p.pow(2).flatten(1).sum(1)
                            for p in self.blocks(self.flat.detach())]).sum(0)

    def member_state(self, b: int) -> dict[str, torch.Tensor]:
        """Network ``b``'s weights by ``state_dict`` name (copies)."""
        return {k: p[b].clone()
                for k, p in zip(self.names, self.blocks(self.flat.detach()), strict=True)}

    def select(self, t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` of every block of a tensor laid out as :attr:`flat`."""
        return self.pack([b.index_select(0, idx) for b in self.blocks(t)])

    def keep(self, idx: list[int], opt: torch.optim.Optimizer | None
             ) -> torch.optim.Optimizer | None:
        """Keep only networks ``idx``; returns the optimizer re-made over the new buffer with
        the kept networks' state (``None`` stays ``None``)."""
        sel = torch.tensor(idx, device=self.flat.device)
        old = self.flat
        with torch.no_grad():
            self._build([b.index_select(0, sel) for b in self.blocks(old.detach())])
        if opt is None:
            return None
        new = type(opt)([self.flat], **{k: v for k, v in opt.param_groups[0].items()
                                         if k != "params"})
        st = opt.state.get(old)
        if st:
            new.state[self.flat] = {k: (v if k == "step" else self.select(v, sel).view(-1))
                                    for k, v in st.items()}
        return new

    def optimizer_blocks(self, opt: torch.optim.Optimizer | None
                         ) -> dict[str, list[torch.Tensor]]:
        """The optimizer's state of :attr:`flat` per state name: per-parameter blocks
        ``[B, *shape]`` (``step``: the shared counter, once)."""
        if opt is None:
            return {}
        return {k: ([v] if k == "step" else self.blocks(v))
                for k, v in opt.state.get(self.flat, {}).items()}


class _StepPlan:
    """Buffers and views of :meth:`StackedNet.loss_and_grad` on ``n`` points: activations
    ``acts[l] [B, n_{l+1}, n]`` (the last holds ``z_L``, then the error), backward buffers
    ``grads[l] [B, n_{l+1}, n]`` (``l < L-1``), and the per-layer views of the weights,
    biases (as columns ``[B, n_l, 1]``) and gradient pieces, so a step makes no new tensor
    (``sq``: the squared output errors)."""

    def __init__(self, net: StackedNet, n: int) -> None:
        B, sizes, p0 = net.B, net.sizes, net.flat
        self.L = L = len(sizes) - 1
        self.acts = [p0.new_empty(B, m, n) for m in sizes[1:]]
        self.grads = [p0.new_empty(B, m, n) for m in sizes[1:-1]]
        self.actsT = [a.transpose(1, 2) for a in self.acts]
        self.sq = torch.empty_like(self.acts[-1])
        P = net.params
        G = net.blocks(net.flat.grad)  # type: ignore[arg-type]
        k = 2 if net.bias else 1
        self.W = [P[k * l] for l in range(L)]
        self.WT = [w.transpose(1, 2) for w in self.W]
        self.dW = [G[k * l] for l in range(L)]
        self.bcol: list[torch.Tensor | None] = [
            P[k * l + 1].unsqueeze(2) if net.bias else None for l in range(L)]
        self.db: list[torch.Tensor | None] = [
            G[k * l + 1] if net.bias else None for l in range(L)]
        m = sizes[1]
        # the first layer of all networks as one matrix (shared data)
        self.W0 = self.W[0].view(B * m, sizes[0])
        self.dW0 = self.dW[0].view(B * m, sizes[0])
        b0 = self.bcol[0]
        self.b0 = None if b0 is None else b0.view(B * m, 1)
        self.z0 = self.acts[0].view(B * m, n)


