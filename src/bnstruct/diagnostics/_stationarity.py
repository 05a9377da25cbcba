r"""How far a network is from a stationary point of its training objective: when the
diagnostics of :func:`~bnstruct.diagnostics.analyze` should not be trusted.

The theory describes (near-)minimizers of

.. math::  \mathcal L(\theta) = \frac1N \sum_i \|f_\theta(x_i) - y_i\|^2
           + \lambda \|\theta\|^2 .

Two components of :math:`\nabla_\theta\mathcal L` are measured (full batch, float64):

- the whole gradient relative to the penalty's, :math:`g_\mathrm{rel} =
  \|\nabla\mathcal L\| / (2\lambda\|\theta\|)` (0 at a stationary point). It is reported,
  not judged: Adam ends training oscillating along the sharpest directions of the fit, so a
  well-trained net still has :math:`g_\mathrm{rel}` of order 1 or more (7.4 on the default
  composite run of 6000 steps, 0.94 after 300 steps: it does not tell them apart);
- the gradient along the neuron-rescaling directions (incoming weights of hidden neuron
  :math:`i` times :math:`e^u`, outgoing times :math:`e^{-u}`). They leave :math:`f`
  unchanged, so only the penalty contributes and the fit's oscillation cannot pollute them:
  :math:`\partial\mathcal L/\partial u_i = 2\lambda (A_i - B_i)` with
  :math:`A_i = \|W_\ell[i,:]\|^2 + b_\ell[i]^2`, :math:`B_i = \|W_{\ell+1}[:,i]\|^2`. The
  number is the worst layer's :math:`\sum_i |A_i - B_i| / \sum_i (A_i + B_i)`
  (:func:`bnstruct.models.balancedness`), 0 at every stationary point; measured 0.22 after
  300 steps and 0.01 after 6000 on the default composite run. It needs a chain of Linear and
  ReLU layers (other models: ``None``, and only the fit is judged).

The warning fires when the rescaling gradient is above :data:`BALANCE_WARN` or the relative
fit :math:`\sum\|f-y\|^2/\sum\|y\|^2` is above :data:`FIT_WARN` (the bottleneck structure
the theory predicts is that of a net that fits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import BnstructError

__all__ = ["Stationarity", "stationarity", "BALANCE_WARN", "FIT_WARN"]

#: gradient along the neuron-rescaling directions, relative (worst layer), above which the net
#: is reported as far from a stationary point
BALANCE_WARN = 0.05
#: relative fit ``sum ||f - y||^2 / sum ||y||^2`` above which the net is reported as not fitting
FIT_WARN = 0.1


@dataclass(frozen=True)
class Stationarity:
    """The distance of a net from a stationary point of its objective (see the module doc).

    ``grad_norm``: :math:`\\|\\nabla_\\theta\\mathcal L\\|`; ``param_norm``:
    :math:`\\|\\theta\\|`; ``rel_grad``: :math:`g_\\mathrm{rel}` (reported);
    ``balance``: the relative gradient along the rescaling directions (judged; ``None`` for a
    model that is not a Linear/ReLU chain); ``rel_fit``:
    :math:`\\sum\\|f-y\\|^2 / \\sum\\|y\\|^2`; ``warning``: ``None`` when both are below their
    thresholds, else one sentence saying what is off and what to do."""

    grad_norm: float
    param_norm: float
    rel_grad: float
    balance: float | None
    rel_fit: float
    lam: float
    warning: str | None

    @property
    def trusted(self) -> bool:
        return self.warning is None


def stationarity(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, lam: float, *,
                 dtype: torch.dtype = torch.float64, balance_warn: float = BALANCE_WARN,
                 fit_warn: float = FIT_WARN) -> Stationarity:
    r"""Measure how far ``model`` is from a stationary point of
    :math:`\frac1N\sum_i\|f(x_i)-y_i\|^2 + \lambda\|\theta\|^2` on ``X`` (``[N, d_in]``),
    ``Y`` (``[N, d_out]``), full batch, in ``dtype`` (the model is copied, never modified).

    ``lam`` multiplies :math:`\|\theta\|^2` (biases included; PyTorch's ``weight_decay`` is
    ``2 * lam``)."""
    import copy

    m = copy.deepcopy(model).to(dtype)
    m.eval()
    params = [p for p in m.parameters() if p.requires_grad]
    Xd, Yd = X.to(dtype), Y.to(dtype)
    for p in params:
        p.grad = None
    resid = m(Xd) - Yd
    fit = resid.pow(2).sum() / Xd.shape[0]
    sq = torch.stack([p.pow(2).sum() for p in params]).sum()
    obj = fit + lam * sq
    grads = torch.autograd.grad(obj, params)
    g = math.sqrt(float(sum(gi.pow(2).sum() for gi in grads)))
    pn = math.sqrt(float(sq.detach()))
    scale = 2 * lam * pn if lam > 0 else pn
    rel = g / scale if scale > 0 else math.inf
    rel_fit = float(resid.detach().pow(2).sum() / Yd.pow(2).sum().clamp_min(1e-300))
    try:
        from ..models import balancedness

        res = balancedness(m)
        bal: float | None = float(res.max()) if res.numel() else 0.0
    except BnstructError:  # not a Linear/ReLU chain: no rescaling symmetry to read
        bal = None
    msgs = []
    if bal is not None and lam > 0 and not bal <= balance_warn:
        msgs.append("it is far from a stationary point of its objective (the gradient along "
                    f"the neuron-rescaling directions is {bal:.2g} of the penalty's, > "
                    f"{balance_warn:g})")
    if not rel_fit <= fit_warn:
        msgs.append(f"it does not fit its data: rel_fit = {rel_fit:.2g} > {fit_warn:g}")
    warning = None
    if msgs:
        warning = ("not converged, do not trust the bottleneck numbers yet: "
                   + "; ".join(msgs) + " (train with more steps)")
    return Stationarity(g, pn, rel, bal, rel_fit, lam, warning)


def stationarity_summary(model: nn.Module, X: torch.Tensor, Y: torch.Tensor | None,
                         lam: float | None) -> dict[str, object]:
    """The keys :func:`~bnstruct.diagnostics.analyze` adds to its summary when it has the
    targets and the penalty: ``rel_fit``, ``rel_grad``, ``rescaling_grad`` and ``warning``
    (``None``, or the sentence of :func:`stationarity`); nothing without ``Y`` and ``lam``."""
    if Y is None or lam is None:
        return {}
    s = stationarity(model, X, Y, lam)
    return {"rel_fit": s.rel_fit, "rel_grad": s.rel_grad, "rescaling_grad": s.balance,
            "warning": s.warning}
