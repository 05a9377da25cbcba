"""One module per claim of the paper (docs/theory.md#claims), each implementing the
:class:`~bnstruct.experiments._protocol.Experiment` protocol: ``NAME``, ``KIND``
(``"claim"`` | ``"finding"``), ``CONFIGS`` (a frozen config per mode: ``smoke`` | ``quick`` |
``full``), ``statement(cfg)``, ``plan(cfg)``, ``measure(cfg, runs, *, memo=None)``,
``verdict(measured, cfg)`` and ``figures(measured, figdir)``.

Claims 2-5 (and 7) read the same composite depth sweep: their plans list identical run
configs (trained once) and they share the measurements of its nets through the memo.
:func:`bnstruct.report.reproduce` plans every selected claim, trains all runs in one
:func:`bnstruct.executors.execute` call, then measures each claim.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..executors import execute
from . import (
    bound,
    digits,
    learning_rate,
    linear,
    narrow_minima,
    norm_vs_depth,
    regime_map,
    representation_convergence,
    representation_rank,
    symmetry,
    weight_spectra,
)
from ._protocol import Experiment
from ._records import MODES, Claim, Memo

__all__ = ["EXPERIMENTS", "Experiment", "Claim", "Memo", "MODES", "get_config",
           "run_experiment", "figure_captions"]

EXPERIMENTS: dict[str, Experiment] = {m.NAME: m for m in (
    linear, norm_vs_depth, weight_spectra, representation_rank, bound, learning_rate,
    narrow_minima, symmetry, digits, representation_convergence, regime_map)}

# leaky ResNets (Jacot & Kaiser, arXiv 2405.17573): one shared sweep (_leaky), six modules
from . import (  # noqa: E402
    leaky_adaptive_steps,
    leaky_balance,
    leaky_cost_of_identity,
    leaky_hamiltonian,
    leaky_structure,
    leaky_timescales,
)

EXPERIMENTS.update({m.NAME: m for m in (
    leaky_hamiltonian, leaky_cost_of_identity, leaky_timescales, leaky_structure,
    leaky_balance, leaky_adaptive_steps)})


def get_config(name: str, mode: str) -> Any:
    """The frozen config of experiment ``name`` in ``mode``."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}: choose from {', '.join(EXPERIMENTS)}")
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    return EXPERIMENTS[name].CONFIGS[mode]


def figure_captions(name: str, figures: Sequence[str | Path]) -> tuple[str, ...]:
    """The caption of each figure of experiment ``name`` (its module's ``CAPTIONS``, by file
    stem; a missing one is an error: every figure in the report has a real caption)."""
    caps = EXPERIMENTS[name].CAPTIONS
    missing = [Path(f).stem for f in figures if Path(f).stem not in caps]
    if missing:
        raise KeyError(f"experiment {name!r} has no caption for figure(s) {missing}: add them "
                       "to its CAPTIONS")
    return tuple(caps[Path(f).stem] for f in figures)


def run_experiment(name: str, mode: str, store: str | Path, figdir: str | Path, *,
                   device: str = "cpu", memo: Memo | None = None) -> Claim:
    """Plan, train (or reuse from ``store``), measure and judge one experiment; ``seconds``
    is its wall time. Errors propagate (``reproduce`` turns them into ``Claim.error``)."""
    cfg = get_config(name, mode)
    mod = EXPERIMENTS[name]
    t0 = time.perf_counter()
    configs = [dataclasses.replace(c, device=device) for c in mod.plan(cfg)]
    runs = execute(configs, store)
    measured = mod.measure(cfg, runs, memo=memo)
    claim = mod.verdict(measured, cfg)
    Path(figdir).mkdir(parents=True, exist_ok=True)
    figs = tuple(str(p) for p in mod.figures(measured, Path(figdir)))
    return dataclasses.replace(claim, figures=figs, captions=figure_captions(name, figs),
                               seconds=time.perf_counter() - t0)
