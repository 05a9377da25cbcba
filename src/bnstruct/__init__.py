"""bnstruct: bottleneck structure in deep L2-regularized networks.

Train deep L2-regularized networks on tasks of known bottleneck rank, diagnose them layer by
layer, and reproduce the claims of Jacot (2023), "Bottleneck Structure in Learned Features".

The names below are loaded on first use (PEP 562), so ``import bnstruct.theory`` pulls in the
closed forms only, never the run store or the training stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    # networks and their parameter algebra
    "MLP": "models", "DeepLinear": "models", "LeakyResNet": "models", "param_norm2": "models",
    "rebalance": "models", "balancedness": "models",
    # data
    "Task": "tasks", "TaskSpec": "tasks", "make_task": "tasks",
    # training
    "Stage": "training", "default_recipe": "training", "parse_stage": "training",
    "train": "training", "TrainResult": "training",
    # runs and the store
    "ModelSpec": "config", "RunConfig": "config", "run": "executors", "Run": "store",
    "load_run": "store", "runs": "store",
    # diagnostics (layer by layer, docs/theory.md, sections 4-6)
    "weight_spectra": "diagnostics", "representations": "diagnostics",
    "effective_rank": "diagnostics", "jacobian": "diagnostics", "log_pdet": "diagnostics",
    "ntk": "diagnostics", "ntk_max_eig": "diagnostics", "hessian_max_eig": "diagnostics",
    "bottleneck_bound": "diagnostics", "analyze": "diagnostics", "Analysis": "diagnostics",
    "stationarity": "diagnostics",
    # errors
    "BnstructError": "errors", "ConfigError": "errors", "DataError": "errors",
    "RunExistsError": "errors",
    # a user's model and points from files
    "load_model": "loading", "load_points": "loading",
}
#: public submodules (closed forms, data, conventions, models, sweeps over a store)
_SUBMODULES = ("theory", "tasks", "conventions", "models", "depthfit", "executors",
               "diagnostics", "experiments")

__all__ = [
    # networks and their parameter algebra
    "MLP", "DeepLinear", "LeakyResNet", "param_norm2", "rebalance", "balancedness", "models",
    # data
    "tasks", "Task", "TaskSpec", "make_task",
    # training
    "Stage", "default_recipe", "parse_stage", "train", "TrainResult",
    # runs and the store
    "ModelSpec", "RunConfig", "run", "Run", "load_run", "runs",
    # conventions, closed forms and estimators (linear costs, R0/R1/R2, depth fits)
    "conventions", "theory",
    # diagnostics (layer by layer, docs/theory.md, sections 4-6)
    "weight_spectra", "representations", "effective_rank", "jacobian", "log_pdet", "ntk",
    "ntk_max_eig", "hessian_max_eig", "bottleneck_bound", "analyze", "Analysis",
    "stationarity",
    # errors
    "BnstructError", "ConfigError", "DataError", "RunExistsError",
    # a user's model and points from files
    "load_model", "load_points",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'bnstruct' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


if TYPE_CHECKING:  # static analysers see the eager imports
    from . import conventions, models, tasks, theory
    from .config import ModelSpec, RunConfig
    from .diagnostics import (
        Analysis,
        analyze,
        bottleneck_bound,
        effective_rank,
        hessian_max_eig,
        jacobian,
        log_pdet,
        ntk,
        ntk_max_eig,
        representations,
        stationarity,
        weight_spectra,
    )
    from .errors import BnstructError, ConfigError, DataError, RunExistsError
    from .executors import run
    from .loading import load_model, load_points
    from .models import MLP, DeepLinear, LeakyResNet, balancedness, param_norm2, rebalance
    from .store import Run, load_run, runs
    from .tasks import Task, TaskSpec, make_task
    from .training import Stage, TrainResult, default_recipe, parse_stage, train
