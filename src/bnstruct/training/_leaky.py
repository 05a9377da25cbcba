r""":class:`LeakyBatch`: ``B >= 1`` :class:`~bnstruct.models.LeakyResNet` networks of one shape
and leak, trained together (the :class:`~bnstruct.training.Batch` of every leaky ResNet, a
single one included, so a run gets the same bits alone or in a batch).

Each parameter is stacked over the members (``[B, *shape]``) and the forward is batched
matrix products (the points broadcast over members); the gradient is autograd's of the sum
of the members' data terms (members do not interact). The update is the stacked batch's
(:mod:`bnstruct.training._batch`) with per-parameter penalty weights :math:`c_{b,q}`
(:meth:`~bnstruct.models.LeakyResNet.penalty_weights`, which follow each member's layer
steps):

.. math::

    g_{b,q} \leftarrow \nabla_{\theta_{b,q}} \mathrm{fit}_b + 2\lambda_b c_{b,q}\theta_{b,q},
    \qquad \theta_b \leftarrow \theta_b + \mathrm{lr}_b(\mathrm{opt}_1(\theta_b, g_b) -
    \theta_b).

Members with ``adapt_every`` re-set their layer steps every that many steps
(:meth:`~bnstruct.models.LeakyResNet.adapt_steps` on the full training set); every history
row records the steps in use (``layer_steps``, space-separated).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..models.leaky import LeakyResNet
from ..tasks import Task
from ._stages import Stage, make_optimizer
from ._state import step_device

__all__ = ["LeakyBatch"]

Tensors = dict[str, torch.Tensor]


class LeakyBatch:
    """:class:`~bnstruct.training.Batch` of leaky ResNets of one shape and leak (module
    docstring); ``models`` are updated in place by :meth:`drop` / :meth:`write_back`."""

    def __init__(self, models: Sequence[LeakyResNet]) -> None:
        self.models = list(models)
        m0 = self.models[0]
        self.leak, self.width = m0.leak, m0.width
        # inp, W.0 .. W.{L-1}, out (the chain's order, not named_parameters')
        self.names = ["inp", *[f"W.{l}" for l in range(m0.depth)], "out"]
        with torch.no_grad():
            self.P = [torch.stack([dict(m.named_parameters())[n].detach() for m in
                                   self.models]).clone().requires_grad_(True)
                      for n in self.names]
            self.rho = torch.stack([m.steps.detach() for m in self.models]).clone()
        self.opt: torch.optim.Optimizer | None = None
        self._lr: torch.Tensor | None = None
        self._lam: torch.Tensor | None = None
        self._sgd = False

    @property
    def size(self) -> int:
        return len(self.models)

    def _col(self, v: Sequence[float]) -> torch.Tensor:
        p = self.P[0]
        return torch.tensor(list(v), dtype=p.dtype, device=p.device)

    def _weights(self) -> list[torch.Tensor]:
        """The penalty weights ``c_{b,q}`` (``[B]`` per parameter ``q``)."""
        io = torch.full((self.size,), 1 / (2 * self.leak), dtype=self.rho.dtype,
                        device=self.rho.device)
        return [io, *[self.rho[:, l] / (2 * self.leak) for l in range(self.rho.shape[1])], io]

    def _decay(self) -> list[torch.Tensor]:
        """``2 lam_b c_{b,q}`` per parameter ``q``, shaped to broadcast over ``P[q]``."""
        assert self._lam is not None
        return [(2 * self._lam * c).reshape(-1, *[1] * (P.dim() - 1))
                for c, P in zip(self._weights(), self.P, strict=True)]

    def start(self, stages: Sequence[Stage], resumed: Sequence[Tensors] | None) -> None:
        self._lr = self._col([float(s.lr) for s in stages]).reshape(-1, 1, 1)
        self._lam = self._col([float(s.lam) for s in stages])
        self._sgd = stages[0].optimizer == "gd"
        self.opt = opt = make_optimizer(stages[0], self.P, lr=1.0, weight_decay=0.0)
        if resumed and any(k.startswith("opt.") for k in resumed[0]):
            for i, P in enumerate(self.P):
                st: Tensors = {}
                for kind in sorted({k.split(".", 2)[2] for k in resumed[0]
                                    if k.startswith(f"opt.{i}.")}):
                    if kind == "step":
                        st[kind] = resumed[0][f"opt.{i}.step"].to(step_device(opt, P))
                    else:
                        st[kind] = torch.stack([t[f"opt.{i}.{kind}"] for t in resumed]).to(P)
                opt.state[P] = st

    def gather(self, X: torch.Tensor, Y: torch.Tensor, idx: Sequence[torch.Tensor] | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if idx is None:
            return X, Y
        i = torch.stack(list(idx)).to(X.device)
        return X[i], Y[i]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X [N, d_in]`` (shared) or ``[B, n, d_in]`` -> ``[B, n, d_out]``."""
        inp, *Ws, out = self.P
        w, leak = self.width, self.leak
        A = torch.matmul(X, inp.transpose(1, 2))
        for l, W in enumerate(Ws):
            r = self.rho[:, l].reshape(-1, 1, 1)
            A = (1 - r * leak) * A + r * (torch.baddbmm(W[:, :, w][:, None, :], torch.relu(A),
                                                        W[:, :, :w].transpose(1, 2)))
        return torch.matmul(A, out.transpose(1, 2))

    def step(self, X: torch.Tensor, Y: torch.Tensor, losses: torch.Tensor) -> None:
        opt = self.opt
        assert opt is not None and self._lr is not None
        opt.zero_grad(set_to_none=False)
        fit = (self.forward(X) - Y).pow(2).sum(-1).mean(-1)
        losses.copy_(fit.detach())
        fit.sum().backward()
        with torch.no_grad():
            for P, d in zip(self.P, self._decay(), strict=True):
                assert P.grad is not None
                P.grad.addcmul_(d.expand_as(P), P)
                if self._sgd:
                    P.grad.mul_(self._lr.reshape(-1, *[1] * (P.dim() - 1)))
            if self._sgd:
                opt.step()
            else:
                old = [P.detach().clone() for P in self.P]
                opt.step()
                for o, P in zip(old, self.P, strict=True):
                    torch.lerp(o, P, self._lr.reshape(-1, *[1] * (P.dim() - 1)).expand_as(P),
                               out=P.data)

    def after_step(self, step: int, task: Task) -> None:
        """Re-set the layer steps of the members whose ``adapt_every`` divides ``step``."""
        due = [b for b, m in enumerate(self.models)
               if m.adapt_every is not None and step % m.adapt_every == 0]
        for b in due:
            m = self.models[b]
            m.load_state_dict(self._member(b))
            self.rho[b] = m.adapt_steps(task.X).to(self.rho)

    @torch.no_grad()
    def evaluate(self, task: Task, lams: Sequence[float]) -> list[dict[str, float | str]]:
        fit = (self.forward(task.X) - task.Y).pow(2).sum(-1).mean(-1)
        test = (self.forward(task.X_test) - task.Y_test).pow(2).sum(-1).mean(-1)
        sq = [P.pow(2).flatten(1).sum(1) for P in self.P]
        n2 = torch.stack(sq).sum(0)
        pen = self._col(lams) * torch.stack([c * q for c, q in zip(self._weights(), sq,
                                                                    strict=True)]).sum(0)
        y2, y2t = task.Y.pow(2).sum(1).mean(), task.Y_test.pow(2).sum(1).mean()
        B = self.size
        v = torch.cat([n2, fit, test, pen, y2[None], y2t[None]]).tolist()
        steps = [" ".join(f"{x:.6g}" for x in r) for r in self.rho.double().tolist()]
        return [{"objective": v[B + b] + v[3 * B + b], "fit": v[B + b], "penalty": v[3 * B + b],
                 "param_norm2": v[b], "rel_fit": v[B + b] / v[4 * B],
                 "test_error": v[2 * B + b], "rel_test_error": v[2 * B + b] / v[4 * B + 1],
                 "layer_steps": steps[b]} for b in range(B)]

    def _member(self, r: int) -> Tensors:
        out = {n: P[r].detach().clone() for n, P in zip(self.names, self.P, strict=True)}
        out["steps"] = self.rho[r].clone()
        return out

    def snapshot(self, r: int, optimizer: bool) -> Tensors:
        out = {f"model.{k}": v.contiguous() for k, v in self._member(r).items()}
        if optimizer and self.opt is not None:
            for i, P in enumerate(self.P):
                for kind, v in self.opt.state.get(P, {}).items():
                    out[f"opt.{i}.{kind}"] = (v.detach().clone() if kind == "step"
                                              else v[r].detach().clone().contiguous())
        return out

    def drop(self, rows: Sequence[int]) -> None:
        for r in rows:
            self.models[r].load_state_dict(self._member(r))
        keep = [r for r in range(self.size) if r not in set(rows)]
        self.models = [self.models[r] for r in keep]
        if not keep:
            return
        sel = torch.tensor(keep, device=self.P[0].device)
        state = {i: self.opt.state.get(P, {}) for i, P in enumerate(self.P)} if self.opt else {}
        with torch.no_grad():
            self.P = [P.detach()[sel].clone().requires_grad_(True) for P in self.P]
        self.rho = self.rho[sel].clone()
        if self._lr is not None and self._lam is not None:
            self._lr, self._lam = self._lr[sel], self._lam[sel]
        if self.opt is not None:
            old = self.opt
            self.opt = opt = type(old)(self.P, **old.defaults)
            for i, P in enumerate(self.P):
                if state.get(i):
                    opt.state[P] = {k: (v if k == "step" else v[sel].clone())
                                    for k, v in state[i].items()}

    def write_back(self) -> None:
        for r, m in enumerate(self.models):
            m.load_state_dict(self._member(r))
