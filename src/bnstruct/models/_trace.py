r"""The positively homogeneous chain of a model, read from its ``torch.fx`` graph.

:func:`linear_chain` traces ``model.forward`` symbolically (:func:`torch.fx.symbolic_trace`:
``torch.nn`` modules stay leaves, every other module, container or wrapper is traced through)
and walks the graph back from its output to its input. The model is a chain when that path is
a straight line of

- ``nn.Linear`` modules (each used once),
- activations :math:`\sigma(z) = \max(z, 0) + s \min(z, 0)` with ``0 <= s``: ``nn.ReLU``,
  ``nn.LeakyReLU``, ``torch.relu``, ``F.relu``, ``F.leaky_relu``, ``Tensor.relu`` (in-place
  variants included),
- identities in eval mode: ``nn.Identity``, ``nn.Dropout`` (and its variants), ``F.dropout``,
  ``Tensor.contiguous``,

and no value on it is read by anything else (a residual ``x + f(x)`` or an in-place side
statement breaks the line); reading its size or shape is fine. Everything the path does not
reach (unused modules, buffers, parameters) is ignored, so an MLP inside any wrapper whose
forward only calls it is the same chain as the bare MLP, with the wrapper's names.

Why ``torch.fx`` rather than hooks on the functional ops: the graph is the data flow itself
(what feeds what is explicit, so a residual or a second use of a value is seen, not guessed
from tensor identities), it needs no example input (the parameter algebra, e.g.
:func:`~bnstruct.rebalance`, parses a model without data), and a model it cannot trace
(data-dependent Python control flow) is never mistaken for a chain: it gets the general path.

Tracing costs a few milliseconds (as much as 10% of an NTK trace), so the outcome is kept per
model (weakly: it goes with the model) together with a signature of everything the graph is
read from: every submodule's identity, type, parameter identities and plain attributes
(``activation``, ``negative_slope``, ``in_features``, ...). Swapping a layer, a parameter or
an activation traces again.
"""

from __future__ import annotations

import operator
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import ConfigError

__all__ = ["LinearChain", "linear_chain", "CHAIN_MODULES"]

#: what a chain may hold, in words (for error messages)
CHAIN_MODULES = ("nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout (the identity in "
                 "eval mode), inside any containers or wrappers that only call them")

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
            nn.FeatureAlphaDropout)
_RELU_FUNCS = {torch.relu, torch.relu_, F.relu, F.relu_}
_LEAKY_FUNCS = {F.leaky_relu, F.leaky_relu_}
_DROPOUT_FUNCS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                  F.feature_alpha_dropout}
_RELU_METHODS = {"relu", "relu_"}
_IDENTITY_METHODS = {"contiguous"}
#: reads of a value that do not change what flows along the chain
_META_METHODS = {"size", "dim", "numel"}
_META_ATTRS = {"shape", "dtype", "device", "ndim"}


@dataclass(frozen=True)
class LinearChain:
    """The chain found in a model's graph: ``linears[l]`` is the live ``nn.Linear`` of layer
    ``l+1`` and ``names[l]`` its qualified name; ``slopes[l]`` the negative-side slopes of the
    activations applied after it, in order (``()`` for none)."""

    linears: tuple[nn.Linear, ...]
    names: tuple[str, ...]
    slopes: tuple[tuple[float, ...], ...]


def _graph(model: nn.Module) -> fx.Graph:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fx.Tracer().trace(model)  # the graph only: no GraphModule code generated
    except Exception as e:  # the user's forward: any failure means "not a traceable chain"
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"{type(model).__name__} cannot be traced by torch.fx "
                          f"({type(e).__name__}: {msg[:120]}); layer-wise diagnostics need a "
                          f"chain of {CHAIN_MODULES}") from None


def _describe(node: fx.Node, mods: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"module {node.target!r} ({type(mods[str(node.target)]).__name__})"
    name = getattr(node.target, "__name__", str(node.target))
    return f"operation {name!r} ({node.op} {node.name!r})"


def _step(node: fx.Node, mods: dict[str, nn.Module]) -> tuple[str, Any]:
    """What a node on the path is: ``("linear", module)``, ``("act", slope)`` or
    ``("identity", None)``; a :class:`ConfigError` naming it otherwise."""
    if node.op == "call_module":
        m = mods[str(node.target)]
        if isinstance(m, nn.Linear):
            return "linear", m
        if isinstance(m, nn.ReLU):
            return "act", 0.0
        if isinstance(m, nn.LeakyReLU):
            return "act", float(m.negative_slope)
        if isinstance(m, (nn.Identity, *_DROPOUT)):
            return "identity", None
    elif node.op == "call_function":
        if node.target in _RELU_FUNCS:
            return "act", 0.0
        if node.target in _LEAKY_FUNCS:
            slope = node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1
                                    else 0.01)
            if isinstance(slope, int | float):
                return "act", float(slope)
        if node.target in _DROPOUT_FUNCS:
            return "identity", None
    elif node.op == "call_method":
        if node.target in _RELU_METHODS:
            return "act", 0.0
        if node.target in _IDENTITY_METHODS:
            return "identity", None
    raise ConfigError(f"unsupported {_describe(node, mods)} in the model's graph: layer-wise "
                      f"diagnostics handle chains of {CHAIN_MODULES}")


def _data_input(node: fx.Node, mods: dict[str, nn.Module]) -> fx.Node:
    """The one value a chain node reads (its first argument); every other argument must be
    a constant."""
    args = [*node.args, *node.kwargs.values()]
    nodes = [a for a in args if isinstance(a, fx.Node)]
    first = node.args[0] if node.args else node.kwargs.get("input")
    if not isinstance(first, fx.Node) or len(nodes) != 1:
        raise ConfigError(f"{_describe(node, mods)} reads {len(nodes)} values of the graph: a "
                          "chain applies one layer after another to one value")
    return first


def _is_meta(user: fx.Node) -> bool:
    return ((user.op == "call_method" and user.target in _META_METHODS)
            or (user.op == "call_function" and user.target is getattr
                and len(user.args) > 1 and user.args[1] in _META_ATTRS))


def _path(graph: fx.Graph, mods: dict[str, nn.Module]) -> list[fx.Node]:
    """The nodes from the input to the output, in execution order (module docstring)."""
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise ConfigError(f"the model's forward takes {len(inputs)} inputs: a chain maps one "
                          "batch X to f(X)")
    out = next(n for n in graph.nodes if n.op == "output")
    node = out.args[0]
    if not isinstance(node, fx.Node):
        raise ConfigError("the model returns a tuple, list or dict: a chain returns one "
                          "tensor (pass output=... to analyze one of them)")
    path: list[fx.Node] = []
    nxt = out
    while node is not inputs[0]:
        others = [u for u in node.users if u is not nxt and not _is_meta(u)]
        if others:
            raise ConfigError(f"the output of {_describe(node, mods)} is also read by "
                              f"{_describe(others[0], mods)}: not a chain")
        if node.op == "call_function" and node.target is operator.getitem:
            raise ConfigError(f"unsupported {_describe(node, mods)}: not a chain")
        path.append(node)
        nxt, node = node, _data_input(node, mods)
    return path[::-1]


_Signature = tuple[Any, ...]
#: model -> (signature, the chain or why there is none); weak: an entry goes with its model
_TRACED: weakref.WeakKeyDictionary[nn.Module, tuple[_Signature, LinearChain | ConfigError]] = (
    weakref.WeakKeyDictionary())
_PLAIN = (str, int, float, bool, type(None))


def _signature(model: nn.Module) -> _Signature:
    """What the traced graph depends on (module docstring)."""
    return tuple((name, type(m), id(m), tuple(id(p) for p in m._parameters.values()),
                  tuple((k, v) for k, v in vars(m).items()
                        if isinstance(v, _PLAIN) or k == "forward"))
                 for name, m in model.named_modules())


def linear_chain(model: nn.Module) -> LinearChain:
    """The chain of ``model`` (module docstring): the one parser of the package (the parameter
    algebra and every layer-wise diagnostic read it). Raises a :class:`ConfigError` naming the first
    module or operation that breaks it, a chain that does not start with a Linear, a Linear
    used twice (shared weights) or mismatched widths."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"expected a torch nn.Module, got {type(model).__name__}")
    sig = _signature(model)
    hit = _TRACED.get(model)
    if hit is None or hit[0] != sig:
        try:
            hit = (sig, _parse(model))
        except ConfigError as e:
            hit = (sig, e)
        _TRACED[model] = hit
    if isinstance(hit[1], ConfigError):
        raise ConfigError(str(hit[1]))
    return hit[1]


def _parse(model: nn.Module) -> LinearChain:
    mods = dict(model.named_modules())
    path = _path(_graph(model), mods)
    linears: list[nn.Linear] = []
    names: list[str] = []
    slopes: list[list[float]] = []
    for node in path:
        kind, what = _step(node, mods)
        if kind == "linear":
            own = {id(p) for p in what.parameters()}
            if any(what is other or own & {id(p) for p in other.parameters()}
                   for other in linears):
                raise ConfigError(f"layer {node.target!r} is used twice in the chain (or "
                                  "shares a parameter with another layer): shared layers are "
                                  "not supported")
            linears.append(what)
            names.append(str(node.target))
            slopes.append([])
        elif kind == "act":
            if not linears:
                raise ConfigError(f"the chain must start with nn.Linear; "
                                  f"{_describe(node, mods)} comes first")
            slopes[-1].append(what)
    if not linears:
        raise ConfigError("the model's graph has no nn.Linear layer")
    for prev, nxt, name in zip(linears[:-1], linears[1:], names[1:], strict=True):
        if prev.out_features != nxt.in_features:
            raise ConfigError(f"layer {name!r} expects {nxt.in_features} inputs but the "
                              f"previous layer has {prev.out_features} outputs")
    return LinearChain(tuple(linears), tuple(names), tuple(tuple(s) for s in slopes))
