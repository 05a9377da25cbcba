r"""Many networks of one shape trained together: stacked weights, one batched matmul per layer.

``B`` feed-forward networks with the same layer sizes, activation and stage structure (the
same optimizer, number of steps and batch size in each stage), on the same task, that differ
in their init seed, penalty ``lam`` and learning rate ``lr`` per stage, train as one: layer
``l``'s weights are one tensor ``W_l [B, n_l, n_{l-1}]`` (biases ``b_l [B, n_l]``) and the
forward pass is one ``torch.baddbmm`` per layer (bias included) on feature-major
activations ``[B, n_l, n]``.

The training step (:meth:`StackedNet.loss_and_grad`) computes the gradient by hand, the
backward pass of the chain written out (``g_L = 2 (z_L - y) / n``;
``dW_l = g_l a_{l-1}^T``, ``db_l = g_l 1``, ``g_{l-1} = (W_l^T g_l) * [a_{l-1} > 0]``), into
buffers allocated once per batch size (``out=`` arguments, in-place ReLU and mask): one
matmul per product and no autograd graph, no per-step allocation and no ``cat`` of the
gradient pieces. The reference is autograd (the tests compare the two in float64).

The update of network ``b`` is the update :func:`bnstruct.train` would make on it alone:

- its loss ``sum_i ||f_b(x_i) - y_i||^2 / n`` on its own minibatch (the stateless order of its
  seed, :func:`~bnstruct.training.minibatch`) and its gradient (the batched backward pass
  never mixes networks);
- its coupled weight decay ``2 lam_b theta_b`` is added to its gradient (what PyTorch's
  ``weight_decay`` does): by the optimizer's own ``weight_decay`` when every network of the
  batch has the same ``lam`` (then the update is literally the single-run one), else by one
  ``addcmul`` with the per-network decays;
- PyTorch's fused (or foreach) Adam / SGD steps the stacked tensors at the common ``lr``
  when all networks share it; otherwise at ``lr = 1`` and network ``b``'s update is scaled by
  ``lr_b``: ``theta_b <- theta_b + lr_b (theta_b' - theta_b)`` (SGD: the gradient is scaled).
  Adam's and SGD's updates are linear in ``lr`` (Adam's ``eps`` is added to
  :math:`\sqrt{\hat v}`, not scaled by ``lr``), so this is the same update up to rounding.

So a network trained in a batch equals the same configuration trained alone up to rounding
(the tests check 1e-10 relative in float64 after 500 steps; see the README for float32).

Divergence is per network and read, as in :func:`bnstruct.train`, from a device buffer of the
losses at each check: a network whose loss turned non-finite is recorded (``diverged_at`` is
exact for the loss), gets its last history row at that check, and leaves the batch (its
weights and optimizer state are dropped from the stacked tensors); the others go on.

Resume: each network's checkpoint is a single run's checkpoint (its slice of the weights and
of the optimizer state, its history in the header, see :class:`TrainState`), written for all
networks at the same steps; a group resumes from checkpoints at one common step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..errors import ConfigError
from ..models import FeedForward
from ..tasks import Task
from ._runner import HISTORY_COLUMNS, TrainResult, _Interrupt, deferred_sigint
from ._stages import Stage, make_optimizer, minibatch
from ._state import TrainState, step_device

__all__ = ["StackedNet", "train_batched", "batched_step", "same_structure", "Coeffs",
           "stage_coeffs"]


def same_structure(a: Sequence[Stage], b: Sequence[Stage]) -> bool:
    """Whether two stage lists can train in one batch: the same optimizer, number of steps
    and batch size in every stage (``lr`` and ``lam`` may differ)."""
    return len(a) == len(b) and all(
        (x.optimizer, x.steps, x.batch_size) == (y.optimizer, y.steps, y.batch_size)
        for x, y in zip(a, b, strict=True))


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
        self.numels = [self.B * math.prod(s) for s in self.shapes]
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
        return [c.view(B, *s) for c, s in zip(t.split([B * math.prod(s) for s in self.shapes]),
                                               self.shapes, strict=True)]

    @property
    def params(self) -> list[torch.Tensor]:
        """The per-parameter pieces ``[B, *shape]`` of :attr:`flat` (views)."""
        return self.blocks(self.flat)

    @staticmethod
    def pack(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([b.reshape(-1) for b in blocks])

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


@dataclass(frozen=True)
class Coeffs:
    """How a stage's learning rates and penalties reach the update of a batch: the
    optimizer's own ``lr`` and ``weight_decay`` when every network shares them (``lr_t`` /
    ``wd_t`` ``None``), else ``lr = 1`` / ``weight_decay = 0`` and per-network values spread
    over the layout of ``net.flat`` (``lr_t``: learning rates, ``wd_t``: decays ``2 lam``)."""

    lr: float
    weight_decay: float
    lr_t: torch.Tensor | None
    wd_t: torch.Tensor | None

    def apply(self, opt: torch.optim.Optimizer) -> None:
        """Set the optimizer's ``lr`` and ``weight_decay`` to these."""
        for g in opt.param_groups:
            g["lr"], g["weight_decay"] = self.lr, self.weight_decay


def stage_coeffs(stages: Sequence[Stage], net: StackedNet) -> Coeffs:
    """:class:`Coeffs` of one stage of each network (``stages[b]`` of row ``b``). For GD with
    differing learning rates the decay is always per-network (it is scaled with the
    gradient: ``theta_b <- theta_b - lr_b (grad_b + 2 lam_b theta_b)``)."""
    p0 = net.flat
    lrs = [float(s.lr) for s in stages]
    wds = [2.0 * float(s.lam) for s in stages]
    if len(set(lrs)) == 1:
        lr, lr_t = lrs[0], None
    else:
        lr, lr_t = 1.0, net.per_network(torch.tensor(lrs, dtype=p0.dtype, device=p0.device))
    if len(set(wds)) == 1 and not (lr_t is not None and stages[0].optimizer == "gd"):
        wd, wd_t = wds[0], None
    else:
        wd, wd_t = 0.0, net.per_network(torch.tensor(wds, dtype=p0.dtype, device=p0.device))
    return Coeffs(lr, wd, lr_t, wd_t)


def batched_step(net: StackedNet, opt: torch.optim.Optimizer, X: torch.Tensor, Y: torch.Tensor,
                 losses: torch.Tensor, i: int, coeffs: Coeffs) -> None:
    """One step of every network of ``net`` (see the module docstring): ``X [n, d_in]`` or
    ``[B, n, d_in]``, ``Y`` likewise; the losses go to ``losses[i]`` (``[B]``, on the device,
    no host sync). ``opt`` steps ``[net.flat]`` with ``coeffs`` applied
    (:meth:`Coeffs.apply`)."""
    net.loss_and_grad(X, Y, losses[i])
    with torch.no_grad():
        p, g = net.flat, net.flat.grad
        assert g is not None
        if coeffs.wd_t is not None:
            g.addcmul_(coeffs.wd_t, p)
        if coeffs.lr_t is None:
            opt.step()
        elif isinstance(opt, torch.optim.SGD):
            g.mul_(coeffs.lr_t)
            opt.step()
        else:
            old = net.scratch()
            old.copy_(p)
            opt.step()
            torch.lerp(old, p, coeffs.lr_t, out=p)


@torch.no_grad()
def _evaluate(net: StackedNet, task: Task, lams: list[float]) -> list[dict[str, float]]:
    """:func:`bnstruct.training.evaluate` of every network (one host sync)."""
    n2 = net.norm2()
    fit = (net(task.X) - task.Y).pow(2).sum(2).mean(1)
    test = (net(task.X_test) - task.Y_test).pow(2).sum(2).mean(1)
    y2 = task.Y.pow(2).sum(1).mean()
    y2t = task.Y_test.pow(2).sum(1).mean()
    vals = torch.cat([n2, fit, test, y2[None], y2t[None]]).tolist()
    B = net.size
    rows = []
    for b in range(B):
        n2_, fit_, test_ = vals[b], vals[B + b], vals[2 * B + b]
        y2_, y2t_ = vals[3 * B], vals[3 * B + 1]
        lam = lams[b]
        rows.append({"objective": fit_ + lam * n2_, "fit": fit_, "penalty": lam * n2_,
                     "param_norm2": n2_, "rel_fit": fit_ / y2_, "test_error": test_,
                     "rel_test_error": test_ / y2t_})
    return rows


def _first_nonfinite_rows(losses: torch.Tensor) -> list[int | None]:
    """Per column of ``losses [k, B]``: the first row index that is non-finite, or None."""
    bad = ~torch.isfinite(losses)
    anyb = bad.any(0)
    first = bad.to(torch.int8).argmax(0)
    return [int(f) if a else None for a, f in zip(anyb.tolist(), first.tolist(), strict=True)]


def train_batched(models: Sequence[FeedForward], task: Task,
                  stages: Sequence[Sequence[Stage]], seeds: Sequence[int], *,
                  log_every: int = 100,
                  checkpoints: Sequence[str | Path] | None = None,
                  checkpoint_every: int | None = None, resume: bool = False,
                  on_row: Callable[[int, dict[str, Any]], None] | None = None
                  ) -> list[TrainResult]:
    """Train ``models`` (same sizes and activation) together on ``task``, network ``b``
    through ``stages[b]`` with minibatch seed ``seeds[b]``; the models are updated in place
    and one :class:`TrainResult` per network is returned, as :func:`bnstruct.train` would
    give for each alone (up to rounding; see the module docstring).

    ``checkpoints[b]`` is network ``b``'s checkpoint prefix (single-run format), written every
    ``checkpoint_every`` steps, at stage ends and on interrupt; with ``resume=True`` existing
    checkpoints are continued (all must be at the same step, or none present).
    ``on_row(b, row)`` sees every history row of network ``b``.
    """
    B = len(models)
    if B == 0:
        return []
    if len(stages) != B or len(seeds) != B:
        raise ConfigError("train_batched needs one stage list and one seed per model")
    stage_lists = [tuple(s) for s in stages]
    if not all(same_structure(stage_lists[0], s) for s in stage_lists):
        raise ConfigError("networks trained in one batch need the same stage structure "
                          "(optimizer, steps and batch size of each stage)")
    if not isinstance(log_every, int) or log_every < 1:
        raise ConfigError(f"log_every must be an integer >= 1, got {log_every!r}")
    if checkpoints is not None and len(checkpoints) != B:
        raise ConfigError("train_batched needs one checkpoint prefix per model")
    if checkpoint_every is not None and checkpoints is None:
        raise ConfigError("checkpoint_every needs checkpoint paths")
    p0 = next(models[0].parameters())
    task = task.to(p0.device, p0.dtype)
    X, Y, N = task.X, task.Y, task.n_train
    structure = stage_lists[0]
    ends = [sum(s.steps for s in structure[:i + 1]) for i in range(len(structure))]

    states = [TrainState(stage_lists[b]) for b in range(B)]
    if resume and checkpoints is not None:
        loaded = [TrainState.load(c, stage_lists[b], device=p0.device)
                  for b, c in enumerate(checkpoints)]
        if any(s is not None for s in loaded):
            steps = {s.step if s is not None else 0 for s in loaded}
            if len(steps) != 1:
                raise ConfigError(f"the checkpoints of a batch are at different steps {steps}: "
                                  "resume them in separate batches")
            for b, s in enumerate(loaded):
                if s is not None:
                    s.restore_model(models[b])
                    states[b] = s
    net = StackedNet(models)
    # the optimizer state of resumed checkpoints (single-run names opt.<i>.<name>), stacked
    # into net.flat's layout
    pending_opt: dict[str, torch.Tensor] | None = None
    if any(k.startswith("opt.") for s in states for k in s.tensors):
        t0_ = states[0].tensors
        kinds = sorted({k.split(".", 2)[2] for k in t0_ if k.startswith("opt.")})
        pending_opt = {}
        for kind in kinds:
            if kind == "step":
                pending_opt[kind] = t0_["opt.0.step"].cpu()
            else:
                pending_opt[kind] = net.pack([torch.stack([s.tensors[f"opt.{i}.{kind}"]
                                                           for s in states]).to(net.flat)
                                              for i in range(len(net.shapes))])
    for s in states:
        s.tensors = {}

    alive = list(range(B))  # model index of each row of the stacked tensors
    opt: torch.optim.Optimizer | None = None
    coeffs = stage_coeffs([s[0] for s in stage_lists], net)
    t0, base = time.perf_counter(), states[0].seconds

    def elapsed() -> float:
        return base + time.perf_counter() - t0

    def write_back(rows: list[int]) -> None:
        for r in rows:
            models[alive[r]].load_state_dict(net.member_state(r))

    def save_all() -> None:
        if checkpoints is None:
            return
        st = states[alive[0]].step
        opt_b = net.optimizer_blocks(opt if st not in ends else None)
        for r, b in enumerate(alive):
            s = states[b]
            s.seconds = elapsed()
            s.tensors = {f"model.{k}": v for k, v in net.member_state(r).items()}
            for kind, blocks in opt_b.items():  # the single-run names opt.<i>.<name>
                for i in range(len(net.shapes)):
                    s.tensors[f"opt.{i}.{kind}"] = (blocks[0].clone() if kind == "step"
                                                    else blocks[i][r].clone())
            s.save(checkpoints[b])
            s.tensors = {}

    def log_rows(si: int, which: Sequence[int]) -> list[dict[str, Any]]:
        """Log a history row for the networks in rows ``which`` of the stacked tensors
        (all are evaluated: one batched forward pass); returns the rows of all."""
        lams = [stages[b][si].lam for b in alive]
        rows = _evaluate(net, task, lams)
        out = []
        for r, b in enumerate(alive):
            st = stages[b][si]
            row = {"step": states[b].step, "stage": si, "lr": st.lr, "lam": st.lam,
                   **rows[r], "seconds": elapsed()}
            if r in which:
                states[b].history.append(row)
                if on_row is not None:
                    on_row(b, row)
            out.append(row)
        return out

    def drop(rows: list[int]) -> None:
        """Take networks (rows of the stacked tensors) out of the batch."""
        nonlocal opt, coeffs, alive
        write_back(rows)
        keep = [r for r in range(len(alive)) if r not in rows]
        alive = [alive[r] for r in keep]
        if keep:
            opt = net.keep(keep, opt)
            coeffs = stage_coeffs([stages[b][si] for b in alive], net)
            if opt is not None:
                coeffs.apply(opt)

    step = states[0].step
    si = 0
    with deferred_sigint() as presses:
        try:
            offset = 0
            for si, stage in enumerate(structure):
                end = ends[si]
                if step >= end or not alive:
                    offset = end
                    continue
                coeffs = stage_coeffs([stages[b][si] for b in alive], net)
                opt = make_optimizer(stage, [net.flat], lr=coeffs.lr,
                                     weight_decay=coeffs.weight_decay)
                if pending_opt is not None:
                    if "step" in pending_opt:
                        pending_opt["step"] = pending_opt["step"].to(step_device(opt, net.flat))
                    opt.state[net.flat] = pending_opt
                    pending_opt = None
                if not states[0].history:
                    log_rows(si, range(len(alive)))
                bs = stage.batch_size
                full = bs is None or bs >= N
                losses = torch.empty(log_every, B, dtype=X.dtype, device=X.device)
                checked = step
                while step < end and alive:
                    if full:
                        xb, yb = X, Y
                    else:
                        assert bs is not None
                        idx = torch.stack([minibatch(seeds[b], si, step - offset, bs, N)
                                           for b in alive]).to(X.device)
                        xb, yb = X[idx], Y[idx]
                    batched_step(net, opt, xb, yb, losses[:, :len(alive)], step - checked,
                                 coeffs)
                    step += 1
                    for b in alive:
                        states[b].step = step
                    log = step % log_every == 0 or step == end
                    ck = checkpoints is not None and checkpoint_every is not None and (
                        step % checkpoint_every == 0)
                    stop = presses() > 0
                    if not (log or ck or stop):
                        continue
                    first = _first_nonfinite_rows(losses[:step - checked, :len(alive)])
                    checked_at = checked
                    checked = step
                    bad = [r for r, f in enumerate(first) if f is not None]
                    for r in bad:
                        b = alive[r]
                        states[b].status = "diverged"
                        states[b].diverged_at = checked_at + int(first[r] or 0)
                    if stop and not bad:
                        raise _Interrupt
                    if bad or log:
                        rows = log_rows(si, range(len(alive)) if log else bad)
                        if log:
                            for r, row in enumerate(rows):
                                if r not in bad and not all(
                                        math.isfinite(row[c]) for c in ("objective",
                                                                        "param_norm2")):
                                    states[alive[r]].status = "diverged"
                                    states[alive[r]].diverged_at = step
                                    bad.append(r)
                        if bad:
                            drop(sorted(bad))
                            if not alive:
                                break
                    if stop:
                        raise _Interrupt
                    if ck:
                        save_all()
                offset = end
                if alive and checkpoints is not None and checkpoint_every:
                    opt = None
                    save_all()
            for b in alive:
                states[b].status = "completed"
        except KeyboardInterrupt:
            for b in alive:
                states[b].status = "interrupted"
            if presses() <= 1:
                save_all()
        finally:
            if alive:
                write_back(list(range(len(alive))))
    results = []
    for b in range(B):
        s = states[b]
        hist = pd.DataFrame(s.history, columns=HISTORY_COLUMNS)
        final = ({k: float(v) for k, v in s.history[-1].items() if k not in ("step", "stage")}
                 if s.history else {})
        results.append(TrainResult(s.status, s.step, hist, elapsed(), s.diverged_at, final))
    return results
