"""One module per claim of the paper (THEORY section 6). Each module has ``NAME``,
``STATEMENT``, ``CONFIGS`` (a frozen config per mode: ``smoke`` | ``quick`` | ``full``) and
three functions that :func:`run_experiment` chains:

- ``measure(ctx, cfg) -> result``: training through the run store (reusing finished runs),
  then the measurements;
- ``verdict(result, cfg=None) -> Claim``: measured, expected, tolerance, passed (pure: the
  tests feed it synthetic results that violate the claim);
- ``figure(result, figdir) -> list[Path]``.

Claims 2-5 (and 7) read the same composite depth sweep, so they share its runs.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import ModuleType

from ..errors import ConfigError
from . import (
    bound,
    digits,
    learning_rate,
    linear,
    narrow_minima,
    norm_vs_depth,
    representation_rank,
    symmetry,
    weight_spectra,
)
from ._common import MODES, Claim, Context

__all__ = ["EXPERIMENTS", "Claim", "Context", "MODES", "run_experiment", "get_config"]

EXPERIMENTS: dict[str, ModuleType] = {m.NAME: m for m in (
    linear, norm_vs_depth, weight_spectra, representation_rank, bound, learning_rate,
    narrow_minima, symmetry, digits)}


def get_config(name: str, mode: str) -> object:
    """The frozen config of experiment ``name`` in ``mode``."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}: choose from {', '.join(EXPERIMENTS)}")
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    return EXPERIMENTS[name].CONFIGS[mode]


def run_experiment(name: str, mode: str, ctx: Context) -> Claim:
    """Run one experiment to its verdict; ``seconds`` is its wall time (training included,
    or loading when the store already holds its runs)."""
    cfg = get_config(name, mode)
    Path(ctx.figdir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    mod = EXPERIMENTS[name]
    res = mod.measure(ctx, cfg)
    claim = mod.verdict(res, cfg)
    figures = tuple(str(p) for p in mod.figure(res, ctx.figdir))
    return dataclasses.replace(claim, figures=figures, seconds=time.perf_counter() - t0)
