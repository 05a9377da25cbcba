"""bnstruct: bottleneck structure in deep L2-regularized networks.

Train deep L2-regularized networks on tasks of known bottleneck rank, diagnose them layer by
layer, and reproduce the claims of Jacot (2023), "Bottleneck Structure in Learned Features".
"""

from . import tasks
from .config import ModelSpec, RunConfig
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
    # errors
    "BnstructError", "ConfigError", "DataError", "RunExistsError",
]
