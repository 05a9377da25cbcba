"""bnstruct: bottleneck structure in deep L2-regularized networks.

Train deep L2-regularized networks on tasks of known bottleneck rank, diagnose them layer by
layer, and reproduce the claims of Jacot (2023), "Bottleneck Structure in Learned Features".
"""

from . import tasks, theory
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
    weight_spectra,
)
from .errors import BnstructError, ConfigError, DataError, RunExistsError
from .models import MLP, DeepLinear, balancedness, param_norm2, rebalance
from .store import Run, load_run, run, runs
from .tasks import Task, TaskSpec, make_task
from .training import Stage, TrainResult, default_recipe, parse_stage, train

__version__ = "0.1.0"

__all__ = [
    # networks and their parameter algebra
    "MLP", "DeepLinear", "param_norm2", "rebalance", "balancedness",
    # data
    "tasks", "Task", "TaskSpec", "make_task",
    # training
    "Stage", "default_recipe", "parse_stage", "train", "TrainResult",
    # runs and the store
    "ModelSpec", "RunConfig", "run", "Run", "load_run", "runs",
    # closed forms and estimators (linear costs, R0/R1/R2, depth fits)
    "theory",
    # diagnostics (layer by layer, THEORY sections 3-4)
    "weight_spectra", "representations", "effective_rank", "jacobian", "log_pdet", "ntk",
    "ntk_max_eig", "hessian_max_eig", "bottleneck_bound", "analyze", "Analysis",
    # errors
    "BnstructError", "ConfigError", "DataError", "RunExistsError",
]
