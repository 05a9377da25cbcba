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

from ._checks import integer, number
from ._checks import seed as check_seed
from .errors import ConfigError
from .models import FAMILY_OPTIONS, MODELS, build_model
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
    ``linear``: :class:`~bnstruct.DeepLinear`, which has no biases; ``leaky-resnet``:
    :class:`~bnstruct.LeakyResNet`, ``depth`` leaky layers of one inner ``width``), its hidden
    width(s) and depth ``L`` (number of weight matrices).

    ``leak`` (the effective depth, required) and ``adapt_every`` (adaptive layer steps, or
    ``None``) belong to ``leaky-resnet`` only; they are left out of the stored config (and
    so of the run's digest) when ``None``, so the other families' runs keep their names."""

    kind: str = "mlp"
    width: int | tuple[int, ...] = 64
    depth: int = 12
    bias: bool = True
    leak: float | None = None
    adapt_every: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in MODELS:
            raise ConfigError(f"unknown model {self.kind!r}: choose one of {', '.join(MODELS)}")
        for opt in ("leak", "adapt_every"):
            if getattr(self, opt) is not None and opt not in FAMILY_OPTIONS.get(self.kind, ()):
                raise ConfigError(f"{opt} is an option of model leaky-resnet, not of "
                                  f"{self.kind!r}")
        if self.kind == "leaky-resnet":
            if self.leak is None:
                raise ConfigError("model leaky-resnet needs leak (the effective depth Lt), "
                                  "e.g. --leak 4")
            number("leak", self.leak, positive=True)
            if self.adapt_every is not None:
                integer("adapt_every", self.adapt_every, low=1)
            if not isinstance(self.width, int):
                raise ConfigError("a leaky ResNet has one inner width: give width as one "
                                  "integer")
            if 1.0 / self.depth * self.leak >= 1:
                raise ConfigError(f"leak {self.leak:g} needs more than depth {self.depth} "
                                  "layers (equal steps 1/L must have rho * leak < 1)")
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
        if self.kind == "leaky-resnet":
            assert isinstance(width, int)
            widths(d_in, [width] * (self.depth + 1), self.depth + 2, d_out)
            return
        widths(d_in, width, self.depth, d_out)

    def options(self) -> dict[str, Any]:
        """The family's own options that are set (``leak``, ``adapt_every``)."""
        return {k: getattr(self, k) for k in FAMILY_OPTIONS.get(self.kind, ())
                if getattr(self, k) is not None}

    def build(self, d_in: int, d_out: int, *, seed: int, dtype: torch.dtype,
              device: torch.device) -> torch.nn.Module:
        width = list(self.width) if isinstance(self.width, tuple) else self.width
        # DeepLinear has no biases whatever ``bias`` says (kept for config compatibility)
        bias = self.bias and self.kind != "linear"
        return build_model(self.kind, d_in, width, self.depth, d_out, bias=bias, seed=seed,
                           dtype=dtype, device=device, options=self.options())

    def to_dict(self) -> dict[str, Any]:
        """The stored form (the family options only when set)."""
        d = asdict(self)
        for k in ("leak", "adapt_every"):
            if d[k] is None:
                d.pop(k)
        return d

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
        d["model"] = self.model.to_dict()
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
        leak = "" if m.leak is None else f"-Lt{m.leak:g}"
        return (f"{self.task.name}-{m.kind}{leak}-L{m.depth}-w{w}-s{self.seed}-"
                f"{self.digest()}")
