"""One module per claim of the paper (THEORY section 6): a frozen ``Config`` per mode
(``smoke`` | ``quick`` | ``full``), ``measure`` (training through the run store, which reuses
finished runs), ``verdict`` (a :class:`Claim` with measured, expected and tolerance) and
``figure``.

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
    claim = EXPERIMENTS[name].run(ctx, cfg)
    return dataclasses.replace(claim, seconds=time.perf_counter() - t0)
