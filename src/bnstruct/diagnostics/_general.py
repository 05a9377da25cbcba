r"""Any ``nn.Module``: where its representations are read, its weight layers, its checks.

- **Representation points** (:func:`hook_points`): by default the output of every activation
  module (:data:`ACTIVATION_TYPES`) and of every *block* (a module of the user's own class,
  not a ``torch.nn`` builtin, other than the model itself, e.g. a residual block), in the
  order the forward pass runs them, then the model's output ``f(X)`` (named ``"output"``);
  or the user's own list of qualified module names (``model.named_modules()``, as
  torchvision's feature extraction names them). A module run several times gives one
  representation per call (``name#2``, ...). A model without any activation module or block
  (activations as functions in ``forward``) is read at its Linear/Conv outputs.
- **Weight layers** (:func:`weight_layers`): every ``nn.Linear``, ``nn.Conv1d`` and
  ``nn.Conv2d``; a kernel ``[out, in/groups, *k]`` is read as the ``out x (in/groups * prod k)``
  matrix. :func:`conv_operator_svals` gives the singular values of the convolution as a
  linear operator on an ``H x W`` grid with circular padding (stride 1): the union over the
  2-d frequencies :math:`\omega` of the singular values of :math:`\hat K(\omega)`
  (``out x in``), the FFT of the kernel zero-padded to the grid (Sedghi, Gupta and Long 2019).
- **Checks**: :func:`unwrap` accepts a ``torch.compile``'d model (its original module) and
  refuses TorchScript; :func:`probe` runs the model once on one point and turns a failure into
  a one-line :class:`~bnstruct.errors.DataError` that says how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, DataError

__all__ = ["ACTIVATION_TYPES", "WEIGHT_TYPES", "hook_points", "record", "weight_layers",
           "weight_matrix", "conv_operator_svals", "unwrap", "probe", "output_selector",
           "check_batch"]

#: modules whose outputs are representations by default
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ReLU6, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.LogSigmoid, nn.Softsign, nn.Tanhshrink)
#: layers whose weights are analyzed
WEIGHT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)

Select = Callable[[Any], torch.Tensor]


def unwrap(model: nn.Module) -> nn.Module:
    """The module to analyze: a ``torch.compile``'d model's original module (same parameters);
    TorchScript modules are refused (``torch.func`` cannot differentiate them)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(f"{type(model).__name__} is a TorchScript module, which torch.func "
                          "cannot differentiate: analyze the original nn.Module (before "
                          "torch.jit.script/trace)")
    orig = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    if isinstance(orig, nn.Module):
        return orig
    if not isinstance(model, nn.Module):
        raise ConfigError(f"expected a torch nn.Module, got {type(model).__name__}")
    return model


def output_selector(output: int | str | Callable[[Any], torch.Tensor] | None) -> Select:
    """``output=`` as a function of the model's return value: ``None`` (a tensor), an index
    into a tuple/list, a key of a dict, or a callable."""
    def pick(out: Any) -> torch.Tensor:
        if output is None:
            got = out
        elif callable(output):
            got = output(out)
        elif isinstance(out, dict):
            if output not in out:
                raise ConfigError(f"output={output!r} is not a key of the model's output "
                                  f"(keys: {', '.join(map(str, out))})")
            got = out[output]
        elif isinstance(out, tuple | list) and isinstance(output, int):
            if not -len(out) <= output < len(out):
                raise ConfigError(f"output={output} is out of range: the model returns "
                                  f"{len(out)} values")
            got = out[output]
        else:
            raise ConfigError(f"output={output!r} cannot select from a "
                              f"{type(out).__name__}")
        if not torch.is_tensor(got):
            kind = type(got).__name__
            hint = (" pass output=<index or key> to choose the tensor to analyze"
                    if isinstance(got, tuple | list | dict) else "")
            raise ConfigError(f"the model returns a {kind}, not a tensor:{hint}")
        return got
    return pick


def check_batch(X: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A batch ``[N, ...]`` (N >= 1, finite) cast to ``dtype``; :class:`DataError` otherwise."""
    if not torch.is_tensor(X):
        try:
            X = torch.as_tensor(X)
        except (TypeError, ValueError, RuntimeError) as e:
            raise DataError(f"X must be a tensor or array of shape [N, ...]: {e}") from None
    if X.dim() < 2:
        raise DataError(f"X must have shape [N, ...] (a batch of points), got "
                        f"{tuple(X.shape)}")
    if X.shape[0] == 0:
        raise DataError(f"X is empty (shape {tuple(X.shape)}): pass at least one point")
    X = X.to(dtype=dtype, device=device) if X.is_floating_point() else X.to(dtype=dtype,
                                                                             device=device)
    bad = ~torch.isfinite(X.reshape(X.shape[0], -1))
    if bad.any():
        rows = bad.any(1).nonzero().flatten()
        raise DataError(f"X has non-finite values (NaN/inf) in {rows.numel()} row(s), first "
                        f"at row {int(rows[0])}")
    return X


def probe(run: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """``run(X[:1])``; a failure becomes one line that says what to fix."""
    try:
        with torch.no_grad():
            out = run(X[:1])
    except ConfigError:
        raise
    except TypeError as e:
        msg = str(e).splitlines()[0]
        if "argument" in msg:
            raise DataError(
                f"the model is not a function of X alone ({msg}): wrap it in an nn.Module "
                "whose forward(x) calls it with the other inputs fixed") from None
        raise DataError(f"the model fails on X of shape {list(X.shape)} ({msg})") from None
    except (RuntimeError, ValueError, IndexError) as e:
        msg = str(e).splitlines()[0]
        raise DataError(f"the model fails on X of shape {list(X.shape)} ({type(e).__name__}: "
                        f"{msg}): pass X in the shape its forward expects") from None
    if not torch.isfinite(out).all():
        raise DataError("the model's output on X is not finite (NaN/inf)")
    return out


def _is_block(m: nn.Module) -> bool:
    return not type(m).__module__.startswith("torch.")


def hook_points(model: nn.Module, layers: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    """Modules whose outputs are recorded (module docstring), by qualified name."""
    named = dict(model.named_modules())
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        missing = [n for n in layers if n not in named or n == ""]
        if missing:
            close = [n for n in named if n and any(p in n for p in missing[0].split("."))][:8]
            raise ConfigError(f"no module named {missing[0]!r} in {type(model).__name__}"
                              + (f"; modules with similar names: {', '.join(close)}" if close
                                 else "; see model.named_modules() for the names"))
        return [(n, named[n]) for n in layers]
    pts = [(n, m) for n, m in named.items() if n and (isinstance(m, ACTIVATION_TYPES)
                                                        or _is_block(m))]
    if not pts:
        pts = [(n, m) for n, m in named.items() if isinstance(m, WEIGHT_TYPES)]
    return pts


def record(points: Sequence[tuple[str, nn.Module]], run: Callable[[], torch.Tensor],
           *, strict: bool) -> tuple[list[str], list[torch.Tensor], torch.Tensor]:
    """Run ``run()`` with forward hooks on ``points``; return the names and outputs in the
    order they ran (``name#2`` for a second call) and ``run()``'s result. Non-tensor outputs
    are skipped, or a :class:`ConfigError` when ``strict`` (the user named the module). Not
    ``strict`` (the default points), an output that is the very tensor recorded just before
    (a block returning its last activation's output) is kept once, under the later (outer)
    name."""
    names: list[str] = []
    outs: list[torch.Tensor] = []
    calls: dict[str, int] = {}
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def h(_m: nn.Module, _args: Any, out: Any) -> None:
            if not torch.is_tensor(out):
                if strict:
                    raise ConfigError(f"module {name!r} returns a {type(out).__name__}, not a "
                                      "tensor: choose another layer")
                return
            calls[name] = calls.get(name, 0) + 1
            label = name if calls[name] == 1 else f"{name}#{calls[name]}"
            if not strict and outs and out is outs[-1]:
                # a block returning its last activation's output tensor: one representation,
                # listed under the block's name (the default points would record it twice)
                names[-1] = label
                return
            names.append(label)
            outs.append(out)
        return h

    try:
        for name, m in points:
            handles.append(m.register_forward_hook(hook(name)))
        y = run()
    finally:
        for hd in handles:
            hd.remove()
    if strict:
        silent = [n for n, _ in points if n not in calls]
        if silent:
            raise ConfigError(f"module {silent[0]!r} does not run in the forward pass on X")
    return names, outs, y


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` of ``model``, by qualified name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_TYPES)]


def weight_matrix(m: nn.Module, dtype: torch.dtype | None) -> torch.Tensor:
    """The weight of a Linear (``[out, in]``) or a Conv kernel as ``out x (in/groups * k)``."""
    W = _weight(m)
    W = W if dtype is None else W.to(dtype)
    return W.reshape(W.shape[0], -1)


def _weight(m: nn.Module) -> torch.Tensor:
    w = m.weight
    assert isinstance(w, torch.Tensor)
    return w.detach()


def conv_operator_svals(m: nn.Module, grid: Sequence[int], dtype: torch.dtype | None
                        ) -> torch.Tensor | str:
    r"""Singular values of a Conv1d/2d as a linear map on a circular ``grid`` (``[L]`` or
    ``[H, W]``, stride 1, groups 1, dilation 1), descending; otherwise a string that says why
    there are none. Kernel ``K[o, i, u, v]``: :math:`\hat K(\omega) = \sum_{u,v}
    K[:, :, u, v] e^{-2\pi i (\omega_1 u / H + \omega_2 v / W)}`."""
    if not isinstance(m, nn.Conv1d | nn.Conv2d):
        return "not a convolution"
    if any(s != 1 for s in m.stride) or m.groups != 1 or any(d != 1 for d in m.dilation):
        return "circular operator spectrum needs stride 1, groups 1, dilation 1"
    K = _weight(m)
    K = K if dtype is None else K.to(dtype)
    ks = K.shape[2:]
    if any(k > g for k, g in zip(ks, grid, strict=True)):
        return f"kernel {tuple(ks)} larger than the grid {tuple(grid)}"
    Kh = torch.fft.fftn(K, s=tuple(grid), dim=tuple(range(2, K.dim())))  # [out, in, *grid]
    M = Kh.permute(*range(2, K.dim()), 0, 1).reshape(math.prod(grid), K.shape[0], K.shape[1])
    return torch.linalg.svdvals(M).reshape(-1).sort(descending=True).values
