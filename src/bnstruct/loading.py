"""Loading a user's model and points from files: ``load_model("pkg.module:factory", weights)``
and ``load_points("X.npy")``.

Nothing is unpickled: weights are safetensors, or a plain ``state_dict`` read through
``torch.load(weights_only=True)``; points are a numeric ``.npy`` array read with
``allow_pickle=False``. Every bad input is a one-line :class:`~bnstruct.errors.ConfigError`.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["load_model", "load_points"]


def _import_factory(spec: str, name: str):
    """The callable named by ``spec = "package.module:factory"`` (the working directory is
    importable, as with ``python -m``)."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ConfigError(f"{name} {spec!r} must be 'package.module:factory'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"{name}: cannot import {mod_name!r} ({e})") from None
    factory = getattr(mod, attr, None)
    if factory is None or not callable(factory):
        raise ConfigError(f"{name}: {mod_name!r} has no callable {attr!r}")
    return factory


def _read_state_dict(weights: Path, name: str) -> dict[str, torch.Tensor]:
    if not weights.is_file():
        raise ConfigError(f"{name} {weights}: no such file")
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(weights))
        else:
            sd = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or a pickle that is not a plain state_dict
        raise ConfigError(f"{name} {weights}: cannot read it as safetensors or a "
                          f"state_dict ({type(e).__name__})") from None
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise ConfigError(f"{name} {weights}: expected a state_dict (names -> tensors)")
    return sd


def load_model(spec: str, weights: str | Path | None = None, *,
               names: tuple[str, str] = ("model", "weights")) -> nn.Module:
    """The module built by ``spec = "package.module:factory"`` (called with no arguments),
    with ``weights`` loaded when given.

    ``weights``: a ``.safetensors`` file, or a ``state_dict`` saved by ``torch.save`` (read
    with ``weights_only=True``); its names and shapes must match the model's exactly.
    ``names`` are how the two arguments are called in error messages (the CLI passes its
    flags, ``("--model", "--weights")``)."""
    name, wname = names
    factory = _import_factory(spec, name)
    try:
        model = factory()
    except Exception as e:  # the user's code: report, do not trace back
        raise ConfigError(f"{name}: {spec}() failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{name}: {spec}() returned a {type(model).__name__}, not an "
                          "nn.Module")
    if weights is None:
        return model
    weights = Path(weights)
    sd = _read_state_dict(weights, wname)
    own = model.state_dict()
    missing = [n for n in own if n not in sd]
    extra = [n for n in sd if n not in own]
    shapes = [n for n in own if n in sd and tuple(sd[n].shape) != tuple(own[n].shape)]
    if missing or extra or shapes:
        parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + (
            [f"unexpected {', '.join(extra[:3])}"] if extra else []) + (
            [f"shape of {shapes[0]}: file {tuple(sd[shapes[0]].shape)}, model "
             f"{tuple(own[shapes[0]].shape)}"] if shapes else [])
        raise ConfigError(f"{wname} {weights} do not match the model: {'; '.join(parts)}")
    model.load_state_dict(sd)
    return model


def load_points(path: str | Path, *, name: str = "data") -> torch.Tensor:
    """The numeric array ``[N, ...]`` stored in the ``.npy`` file ``path`` as a tensor
    (integers become the default float dtype; floats keep theirs)."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{name} {path}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ConfigError(f"{name} {path}: not a .npy array ({type(e).__name__})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise ConfigError(f"{name} {path}: expected a numeric .npy array [N, ...]")
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())
