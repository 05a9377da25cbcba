r"""What the stage loop trains: a :class:`Batch` of networks that step together.

Two implementations, one interface (:class:`Batch`), so one loop (:mod:`._loop`) trains
everything:

- :class:`StackedBatch`: ``B >= 1`` :class:`~bnstruct.models.FeedForward` networks of one
  shape as a :class:`~bnstruct.training.StackedNet` (one batched matmul per layer, a
  hand-written backward). A single bnstruct network trains as a batch of one through it, so
  a run's weights are the same bits whether it trained alone, in a batch of any size at any
  row, in a worker process or on Ray.
- :class:`~bnstruct.training._leaky.LeakyBatch`: ``B >= 1`` leaky ResNets of one shape and
  leak (stacked parameters, autograd, per-parameter penalty weights).
- :class:`ModuleBatch`: any other ``nn.Module``, alone, through autograd and the stage's
  optimizer.

The update of member ``b`` at learning rate ``lr_b`` and penalty ``lam_b`` (coupled weight
decay, PyTorch's ``weight_decay = 2 lam``):

.. math::

    g_b \leftarrow \nabla \mathrm{fit}_b + 2\lambda_b \theta_b, \qquad
    \theta_b \leftarrow \theta_b + \mathrm{lr}_b \,(\mathrm{opt}_1(\theta_b, g_b) -
    \theta_b)

where :math:`\mathrm{opt}_1` is PyTorch's fused (or foreach) Adam / SGD step at ``lr = 1``
over the whole stacked tensor (SGD: the gradient is scaled by ``lr_b`` instead). Adam's and
SGD's steps are linear in ``lr`` (Adam's ``eps`` is added to :math:`\sqrt{\hat v}`), so this
is the textbook update up to rounding, and it is the *same arithmetic for every member of
every batch*: the decay and the learning rate are always per-member tensors, never the
optimizer's scalars for some batches and tensors for others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import ConfigError
from ..models import FeedForward
from ..tasks import Task
from ._stacked import StackedNet
from ._stages import Stage, make_optimizer
from ._state import load_optimizer_tensors, optimizer_tensors, step_device
from ._step import evaluate, step

__all__ = ["Batch", "StackedBatch", "ModuleBatch", "make_batch", "stackable", "same_structure"]

Tensors = dict[str, torch.Tensor]


def same_structure(a: Sequence[Stage], b: Sequence[Stage]) -> bool:
    """Whether two stage lists can train in one batch: the same optimizer, number of steps
    and batch size in every stage (``lr`` and ``lam`` may differ)."""
    return len(a) == len(b) and all(
        (x.optimizer, x.steps, x.batch_size) == (y.optimizer, y.steps, y.batch_size)
        for x, y in zip(a, b, strict=True))


class Batch(Protocol):
    """The networks of one loop. Members are rows ``0 .. size-1``; :meth:`drop` renumbers."""

    @property
    def size(self) -> int: ...

    def start(self, stages: Sequence[Stage], resumed: Sequence[Tensors] | None) -> None:
        """A fresh optimizer for a stage (``stages[r]`` of row ``r``); ``resumed``: each
        row's checkpoint tensors (``opt.<i>.<name>``) to continue the optimizer from."""

    def gather(self, X: torch.Tensor, Y: torch.Tensor, idx: Sequence[torch.Tensor] | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's data: all of ``X, Y``, or row ``r``'s minibatch ``idx[r]``."""

    def step(self, X: torch.Tensor, Y: torch.Tensor, losses: torch.Tensor) -> None:
        """One optimizer step of every row; its data term into ``losses [size]`` (no sync)."""

    def evaluate(self, task: Task, lams: Sequence[float]) -> list[dict[str, Any]]:
        """Full-batch objective terms of every row (:func:`~bnstruct.training.evaluate`;
        numbers, and a family's own history columns such as ``layer_steps``)."""

    def snapshot(self, r: int, optimizer: bool) -> Tensors:
        """Row ``r``'s checkpoint tensors in the single-run names (``model.<name>``, and
        ``opt.<i>.<name>`` when ``optimizer``)."""

    def drop(self, rows: Sequence[int]) -> None:
        """Write rows ``rows`` back to their models and take them out."""

    def write_back(self) -> None:
        """Write every remaining row's weights into its model."""

    # optional: ``after_step(step, task)``, called by the loop after every step (the leaky
    # ResNets' adaptive layer steps, :class:`~bnstruct.training._leaky.LeakyBatch`)


class StackedBatch:
    """:class:`Batch` of :class:`FeedForward` networks of one shape (see the module
    docstring); ``models`` are updated in place by :meth:`drop` / :meth:`write_back`."""

    def __init__(self, models: Sequence[FeedForward]) -> None:
        self.models = list(models)
        self.net = StackedNet(self.models)
        self.opt: torch.optim.Optimizer | None = None
        self._lr: torch.Tensor | None = None
        self._wd: torch.Tensor | None = None
        self._sgd = False

    @property
    def size(self) -> int:
        return self.net.size

    def _coeffs(self, stages: Sequence[Stage]) -> None:
        p = self.net.flat
        self._lr = self.net.per_network(torch.tensor([float(s.lr) for s in stages],
                                                     dtype=p.dtype, device=p.device))
        self._wd = self.net.per_network(torch.tensor([2.0 * float(s.lam) for s in stages],
                                                     dtype=p.dtype, device=p.device))

    def start(self, stages: Sequence[Stage], resumed: Sequence[Tensors] | None) -> None:
        self._coeffs(stages)
        self._sgd = stages[0].optimizer == "gd"
        self.opt = opt = make_optimizer(stages[0], [self.net.flat], lr=1.0, weight_decay=0.0)
        if resumed and any(k.startswith("opt.") for k in resumed[0]):
            opt.state[self.net.flat] = self._stack_optimizer(resumed, step_device(opt,
                                                                                  self.net.flat))

    def _stack_optimizer(self, resumed: Sequence[Tensors], step_dev: torch.device) -> Tensors:
        """Single-run optimizer tensors ``opt.<i>.<kind>`` of every row, in ``flat``'s
        layout (``step``: the shared counter)."""
        kinds = sorted({k.split(".", 2)[2] for k in resumed[0] if k.startswith("opt.")})
        n = len(self.net.shapes)
        out: Tensors = {}
        for kind in kinds:
            if kind == "step":
                out[kind] = resumed[0]["opt.0.step"].to(step_dev)
            else:
                out[kind] = self.net.pack([torch.stack([t[f"opt.{i}.{kind}"] for t in resumed])
                                           .to(self.net.flat) for i in range(n)])
        return out

    def gather(self, X: torch.Tensor, Y: torch.Tensor, idx: Sequence[torch.Tensor] | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if idx is None:
            return X, Y
        i = torch.stack(list(idx)).to(X.device)
        return X[i], Y[i]

    def step(self, X: torch.Tensor, Y: torch.Tensor, losses: torch.Tensor) -> None:
        net, opt = self.net, self.opt
        assert opt is not None and self._lr is not None and self._wd is not None
        net.loss_and_grad(X, Y, losses)
        with torch.no_grad():
            p, g = net.flat, net.flat.grad
            assert g is not None
            g.addcmul_(self._wd, p)
            if self._sgd:
                g.mul_(self._lr)
                opt.step()
            else:
                old = net.scratch()
                old.copy_(p)
                opt.step()
                torch.lerp(old, p, self._lr, out=p)

    @torch.no_grad()
    def evaluate(self, task: Task, lams: Sequence[float]) -> list[dict[str, float]]:
        net = self.net
        n2 = net.norm2()
        fit = (net(task.X) - task.Y).pow(2).sum(2).mean(1)
        test = (net(task.X_test) - task.Y_test).pow(2).sum(2).mean(1)
        y2 = task.Y.pow(2).sum(1).mean()
        y2t = task.Y_test.pow(2).sum(1).mean()
        B = net.size
        v = torch.cat([n2, fit, test, y2[None], y2t[None]]).tolist()
        return [_metrics(v[b], v[B + b], v[2 * B + b], v[3 * B], v[3 * B + 1], lams[b])
                for b in range(B)]

    def snapshot(self, r: int, optimizer: bool) -> Tensors:
        out = {f"model.{k}": v for k, v in self.net.member_state(r).items()}
        if optimizer:
            for kind, blocks in self.net.optimizer_blocks(self.opt).items():
                for i in range(len(self.net.shapes)):
                    out[f"opt.{i}.{kind}"] = (blocks[0].clone() if kind == "step"
                                              else blocks[i][r].clone())
        return out

    def drop(self, rows: Sequence[int]) -> None:
        for r in rows:
            self.models[r].load_state_dict(self.net.member_state(r))
        keep = [r for r in range(self.size) if r not in set(rows)]
        self.models = [self.models[r] for r in keep]
        if keep:
            sel = torch.tensor(keep, device=self.net.flat.device)
            if self._lr is not None and self._wd is not None:  # before the net shrinks
                self._lr, self._wd = (self.net.select(self._lr, sel),
                                      self.net.select(self._wd, sel))
            self.opt = self.net.keep(keep, self.opt)

    def write_back(self) -> None:
        for r, m in enumerate(self.models):
            m.load_state_dict(self.net.member_state(r))


class ModuleBatch:
    """:class:`Batch` of one ``nn.Module`` of any kind, trained through autograd
    (:func:`~bnstruct.training.step`) and the stage's optimizer as it comes."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params = list(model.parameters())
        self.opt: torch.optim.Optimizer | None = None
        self._n = 1

    @property
    def size(self) -> int:
        return self._n

    def start(self, stages: Sequence[Stage], resumed: Sequence[Tensors] | None) -> None:
        self.opt = make_optimizer(stages[0], self.params)
        if resumed:
            load_optimizer_tensors(self.opt, resumed[0])

    def gather(self, X: torch.Tensor, Y: torch.Tensor, idx: Sequence[torch.Tensor] | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if idx is None:
            return X, Y
        i = idx[0].to(X.device)
        return X[i], Y[i]

    def step(self, X: torch.Tensor, Y: torch.Tensor, losses: torch.Tensor) -> None:
        assert self.opt is not None
        step(self.model, self.opt, X, Y, losses, 0)

    def evaluate(self, task: Task, lams: Sequence[float]) -> list[dict[str, float]]:
        return [evaluate(self.model, task, lams[0])]

    def snapshot(self, r: int, optimizer: bool) -> Tensors:
        out = {f"model.{k}": v.detach().clone().contiguous()
               for k, v in self.model.state_dict().items()}
        if optimizer:
            out.update(optimizer_tensors(self.opt))
        return out

    def drop(self, rows: Sequence[int]) -> None:
        self._n = 0

    def write_back(self) -> None:
        pass


def _metrics(n2: float, fit: float, test: float, y2: float, y2t: float, lam: float
             ) -> dict[str, float]:
    return {"objective": fit + lam * n2, "fit": fit, "penalty": lam * n2, "param_norm2": n2,
            "rel_fit": fit / y2, "test_error": test, "rel_test_error": test / y2t}


def stackable(m: nn.Module) -> bool:
    """Whether ``m`` is exactly what the stacked kernel computes: a bnstruct
    :class:`FeedForward` whose forward is the chain's own (a subclass may override it), whose
    parameters are its layers' weights and biases and all trainable, and no buffers."""
    if not isinstance(m, FeedForward) or type(m).forward is not FeedForward.forward:
        return False
    if any(type(layer).forward is not nn.Linear.forward for layer in m.layers):
        return False
    own = {f"layers.{i}.{n}" for i, lin in enumerate(m.linears)
           for n, p in lin.named_parameters(recurse=False) if p is not None}
    params = dict(m.named_parameters())
    return (set(params) == own and all(p.requires_grad for p in params.values())
            and not list(m.buffers()))


def make_batch(models: Sequence[nn.Module]) -> Batch:
    """:class:`StackedBatch` for bnstruct's feed-forward networks (any number, one shape;
    :func:`stackable`), :class:`~bnstruct.training._leaky.LeakyBatch` for leaky ResNets
    (any number, one shape and leak), :class:`ModuleBatch` for a single model of any other kind (a
    subclass with its own forward, frozen or extra parameters included)."""
    from ..models.leaky import LeakyResNet
    from ._leaky import LeakyBatch

    if models and all(stackable(m) for m in models):
        return StackedBatch([m for m in models if isinstance(m, FeedForward)])
    if models and all(type(m) is LeakyResNet for m in models):
        leaky = [m for m in models if isinstance(m, LeakyResNet)]
        if len({(m.d_in, m.width, m.depth, m.d_out, m.leak, m.inp.dtype, m.inp.device)
                for m in leaky}) == 1:
            return LeakyBatch(leaky)
    if len(models) == 1:
        return ModuleBatch(models[0])
    raise ConfigError("only plain bnstruct feed-forward networks (bn.MLP, bn.DeepLinear, all "
                      "parameters trainable) train in batches; train other models one at a "
                      "time with bnstruct.train")
