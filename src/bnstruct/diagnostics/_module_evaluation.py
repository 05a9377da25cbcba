r""":class:`ModuleEvaluation`: the :class:`~bnstruct.diagnostics.Evaluation` of any module
that is not a positively homogeneous chain, through ``torch.func`` (:mod:`._autodiff`).

The representations are the outputs of every activation module and every block (or the
modules named by ``layers``), then ``f(x)`` (:mod:`._general`); the weights are the Linear
and Conv1d/Conv2d layers (kernels as ``out x (in/groups * k)`` matrices). The model runs in
eval mode during every measurement, its train/eval flags restored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ._evaluation import Evaluation, check_ntk_mode
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

__all__ = ["ModuleEvaluation"]


class ModuleEvaluation(Evaluation):
    """Any module evaluated on ``X`` (``[N, ...]``): see :class:`Evaluation`."""

    kind = "module"
    implementation = "autodiff"

    def __init__(self, model: nn.Module, X: Any, *, dtype: torch.dtype | None = torch.float64,
                 implementation: str = "auto", output: Any = None,
                 layers: Sequence[str] | None = None):
        self._chain_error: ConfigError = self.__dict__.pop(
            "_chain_error", ConfigError("not a chain"))
        self.model = unwrap(model)
        self.layers_asked = None if layers is None else list(
            [layers] if isinstance(layers, str) else layers)
        self.select = output_selector(output)
        p = next(self.model.parameters(), None)
        if p is None:
            raise ConfigError(f"{type(self.model).__name__} has no parameters")
        self.model_dtype = p.dtype
        self.dtype = dtype or p.dtype
        self.device = p.device
        self.X = check_batch(X, self.dtype, self.device)
        f = self.functional
        self._d_out = int(probe(lambda x: f(f.params, x), self.X).shape[1])
        if self.layers_asked is not None:  # names exist and run: checked up front
            self._general_reps  # noqa: B018

    @property
    def chain_reason(self) -> str:
        return str(self._chain_error)

    def require_chain(self) -> Any:
        raise self._chain_error

    def _no_chain(self) -> ConfigError:
        return self._chain_error

    @property
    def d_out(self) -> int:
        return self._d_out

    @cached_property
    def output(self) -> torch.Tensor:
        f = self.functional
        with torch.no_grad():
            return f(f.params, self.X)

    # -- representations -----------------------------------------------------------------
    @cached_property
    def _general_reps(self) -> tuple[list[str], list[torch.Tensor]]:
        f = self.functional
        points = hook_points(self.model, self.layers_asked)
        with torch.no_grad():
            names, outs, y = record(points, lambda: f(f.params, self.X),
                                    strict=self.layers_asked is not None)
        outs = [o.detach() for o in outs]
        if self.layers_asked is None:
            names, outs = [*names, "output"], [*outs, y.detach()]
        return names, outs

    def representations(self, pre: bool = False) -> list[torch.Tensor]:
        """The outputs at :attr:`rep_names`, in the compute dtype, the model in eval mode."""
        if pre:
            raise ConfigError("pre=True needs a chain (pre-activations of its Linear "
                              "layers); pass layers=[...] to read other modules")
        return self._general_reps[1]

    @property
    def rep_names(self) -> list[str]:
        return self._general_reps[0]

    @cached_property
    def _points(self) -> list[tuple[str, nn.Module]]:
        return hook_points(self.model, self.layers_asked)

    def _point_reps(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.functional
        _, outs, y = record(self._points, lambda: f(f.params, x[None]), strict=False)
        got = [o[0].reshape(-1) for o in outs]
        if self.layers_asked is None:
            got.append(y[0])
        return tuple(got)

    # -- weights -------------------------------------------------------------------------
    @cached_property
    def _layers(self) -> list[tuple[str, nn.Module]]:
        return weight_layers(self.model)

    @property
    def weight_names(self) -> list[str]:
        """Qualified names of the Linear/Conv1d/Conv2d layers."""
        return [n for n, _ in self._layers]

    @cached_property
    def weights(self) -> list[torch.Tensor]:
        return [weight_matrix(m, self.dtype) for _, m in self._layers]

    @cached_property
    def biases(self) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = []
        for _, m in self._layers:
            b = getattr(m, "bias", None)
            out.append(None if b is None else b.detach().to(self.dtype))
        return out

    @cached_property
    def param_norm2(self) -> float:
        r""":math:`\|\theta\|^2` of every parameter of the model (float64)."""
        return float(sum(float(p.detach().double().pow(2).sum())
                         for p in self.model.parameters()))

    def conv_operator_spectra(self) -> list[torch.Tensor | str]:
        """Per weight layer: singular values of a convolution as an operator on its input
        grid with circular padding (:func:`._general.conv_operator_svals`), or why none."""
        return self._conv_operator

    @cached_property
    def _conv_operator(self) -> list[torch.Tensor | str]:
        grids: dict[str, list[int]] = {}
        mods = self._layers

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

    # -- Jacobian and NTK ----------------------------------------------------------------
    @cached_property
    def jacobian(self) -> torch.Tensor:
        return self.functional.jacobian(self.X).detach()

    def ntk(self, mode: str = "full", X2: torch.Tensor | None = None) -> torch.Tensor:
        r"""Empirical NTK (see :func:`bnstruct.ntk`); ``X = X2`` results are cached."""
        check_ntk_mode(mode, X2)
        if X2 is not None:
            X2 = check_batch(X2, self.dtype, self.device)
            if X2.shape[1:] != self.X.shape[1:]:
                raise DataError(f"X2 has point shape {list(X2.shape[1:])} but X has "
                                f"{list(self.X.shape[1:])}")
            with torch.no_grad():
                return self.functional.ntk(self.X, X2, "full", self.d_out)
        key = ("ntk", mode)
        if key not in self._by_args:
            with torch.no_grad():
                self._by_args[key] = self.functional.ntk(self.X, None, mode, self.d_out)
        K: torch.Tensor = self._by_args[key]
        return K

    def ntk_matvec(self) -> Callable[[torch.Tensor], torch.Tensor]:
        r"""``v [N, d_out] -> Theta(X, X) v`` (vjp then jvp, never the Jacobian)."""
        return self.functional.ntk_matvec(self.X)
