"""Frozen, strict run configurations: what a run directory's ``config.json`` holds.

``from_dict`` rejects unknown keys and wrong types with a message naming the key, so a config
file with a typo is an error, not a silently ignored option.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from ._checks import integer
from ._checks import seed as check_seed
from .errors import ConfigError
from .models import MODELS, FeedForward, build_model
from .models._feedforward import widths
from .tasks import TaskSpec
from .training import Stage, default_recipe

__all__ = ["ModelSpec", "RunConfig", "DTYPES", "resolve_device"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without a GPU is an error;
    only devices that hold real data (``cpu``, ``cuda[:N]``, ``mps``) are accepted."""
    if not isinstance(device, str):
        raise ConfigError(f"device must be a string (auto, cpu or cuda), got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but no GPU is available: use "
                          "device='cpu'")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu or cuda") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r} holds no data to train on: use auto, cpu or cuda")
    return dev


def _strict(cls: type, d: Any, where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in fields(cls)}
    bad = sorted(set(d) - names)
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {bad}; allowed: {sorted(names)}")
    return dict(d)


@dataclass(frozen=True)
class ModelSpec:
    """A network family from :data:`bnstruct.models.MODELS` (``mlp``: ReLU with biases;
    ``linear``: :class:`~bnstruct.DeepLinear`, which has no biases), its hidden width(s) and
    depth ``L`` (number of weight matrices)."""

    kind: str = "mlp"
    width: int | tuple[int, ...] = 64
    depth: int = 12
    bias: bool = True

    def __post_init__(self) -> None:
        if self.kind not in MODELS:
            raise ConfigError(f"unknown model {self.kind!r}: choose one of {', '.join(MODELS)}")
        integer("depth", self.depth, low=1)
        ws = self.width if isinstance(self.width, tuple) else (self.width,)
        for w in ws:
            integer("width", w, low=1)
        if isinstance(self.width, tuple) and len(self.width) != self.depth - 1:
            raise ConfigError(f"width list has {len(self.width)} entries; depth {self.depth} "
                              f"needs depth-1 = {self.depth - 1}")

    def check(self, d_in: int, d_out: int) -> None:
        """Raise, before anything is allocated or written, when this network cannot be built
        for ``d_in`` inputs and ``d_out`` outputs (sizes, memory)."""
        width = list(self.width) if isinstance(self.width, tuple) else self.width
        widths(d_in, width, self.depth, d_out)

    def build(self, d_in: int, d_out: int, *, seed: int, dtype: torch.dtype,
              device: torch.device) -> FeedForward:
        width = list(self.width) if isinstance(self.width, tuple) else self.width
        # DeepLinear has no biases whatever ``bias`` says (kept for config compatibility)
        bias = self.bias and self.kind != "linear"
        return build_model(self.kind, d_in, width, self.depth, d_out, bias=bias, seed=seed,
                           dtype=dtype, device=device)

    @classmethod
    def from_dict(cls, d: Any) -> ModelSpec:
        d = _strict(cls, d, "model")
        if isinstance(d.get("width"), list):
            d["width"] = tuple(d["width"])
        return cls(**d)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run. Its :meth:`digest` names the run in a store."""

    task: TaskSpec = field(default_factory=lambda: TaskSpec("composite"))
    model: ModelSpec = field(default_factory=ModelSpec)
    stages: tuple[Stage, ...] = field(default_factory=default_recipe)
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int | None = 1000
    dtype: str = "float32"
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if not self.stages:
            raise ConfigError("a run needs at least one stage")
        check_seed("seed", self.seed)
        if not isinstance(self.device, str) or (self.device != "auto" and not any(
                self.device == t or self.device.startswith(t + ":") for t in
                ("cpu", "cuda", "mps"))):
            raise ConfigError(f"device must be auto, cpu, cuda[:N] or mps, got {self.device!r}")
        integer("log_every", self.log_every, low=1)
        if self.checkpoint_every is not None:
            integer("checkpoint_every", self.checkpoint_every, low=1)
        if not isinstance(self.task, TaskSpec) or not isinstance(self.model, ModelSpec):
            raise ConfigError("a run config needs a TaskSpec task and a ModelSpec model")
        if not all(isinstance(s, Stage) for s in self.stages):
            raise ConfigError("a run config's stages must be bnstruct.Stage objects")

    @property
    def steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["task"] = self.task.to_dict()
        d["stages"] = [asdict(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> RunConfig:
        d = _strict(cls, d, "config")
        if "task" in d:
            d["task"] = TaskSpec.from_dict(_strict(TaskSpec, d["task"], "task"))
        if "model" in d:
            d["model"] = ModelSpec.from_dict(d["model"])
        if "stages" in d:
            d["stages"] = tuple(Stage(**_strict(Stage, s, "stage")) for s in d["stages"])
        return cls(**d)

    def digest(self) -> str:
        """Hash of everything that changes the result (not ``log_every``, ``checkpoint_every``
        or ``device``)."""
        d = self.to_dict()
        for k in ("log_every", "checkpoint_every", "device"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]

    def default_name(self) -> str:
        m = self.model
        w = m.width if isinstance(m.width, int) else "x".join(map(str, m.width))
        return f"{self.task.name}-{m.kind}-L{m.depth}-w{w}-s{self.seed}-{self.digest()}"
