r"""The records every experiment writes and shares: the :class:`Claim` record, the mode
names, the planned run configs, the explicit per-reproduce :class:`Memo`, and the float64 copy
every measurement is taken on.

Conventions (docs/theory.md, sections 1 and 4; defined once in :mod:`bnstruct.conventions`):

- ``lam`` multiplies :math:`\|\theta\|^2` (biases included); PyTorch's ``weight_decay = 2 lam``.
- Training runs in float32 (speed); every measurement is taken in float64 on the stored weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from .._io import jsonable
from ..config import ModelSpec, RunConfig
from ..errors import BnstructError
from ..store import Run
from ..tasks import TaskSpec
from ..training import Stage

__all__ = ["Claim", "Kind", "Mode", "MODES", "Memo", "run_config", "task_spec",
           "require_status", "float64_copy"]

Mode = Literal["smoke", "quick", "full"]
MODES: tuple[str, ...] = ("smoke", "quick", "full")
Kind = Literal["claim", "finding"]
T = TypeVar("T")


@dataclass(frozen=True)
class Claim:
    """The verdict on one claim of the paper, as written to ``claims.json``.

    ``measured``/``expected``/``tolerance`` are short human-readable strings (the table);
    ``values`` holds the numbers behind them (JSON-safe). ``kind`` is ``"claim"`` (pass/fail
    against the paper) or ``"finding"`` (reported, passes when it ran to a verdict).
    ``error`` is set (and ``passed`` is False) when the experiment crashed before a verdict:
    that is an error of the pipeline, reported as such, never a failed claim.

    What a reader sees first (the report's card, ``claims.md`` and the closing lines of
    ``bnstruct reproduce``) is written by the claim module as data, never parsed from
    ``measured``: ``key`` (the number the verdict judges, e.g. ``"R0_hat = 1.94 ± 0.03"``),
    ``bound`` (what it is judged against, e.g. ``"<= 0.5"``), ``checked`` (one plain sentence
    of what was checked) and ``why`` (for a failure: why, in words; empty when it passed).
    ``captions`` has one caption per figure.
    """

    name: str
    statement: str
    measured: str
    expected: str
    tolerance: str
    passed: bool
    seconds: float = 0.0
    figures: tuple[str, ...] = ()
    values: dict[str, Any] = field(default_factory=dict, compare=False)
    kind: Kind = "claim"
    note: str = ""
    error: str | None = None
    key: str = ""
    bound: str = ""
    checked: str = ""
    why: str = ""
    captions: tuple[str, ...] = ()

    @classmethod
    def crashed(cls, name: str, statement: str, kind: Kind, exc: BaseException,
                seconds: float = 0.0) -> Claim:
        """The record of an experiment that raised ``exc`` before its verdict."""
        return cls(name, statement, measured="-", expected="-", tolerance="-", passed=False,
                   seconds=seconds, kind=kind, error=f"{type(exc).__name__}: {exc}",
                   why="the experiment raised an error before its verdict (a pipeline "
                       "error, not a failed claim)")

    @property
    def outcome(self) -> str:
        """``error`` | ``pass`` | ``FAIL`` | ``reported`` (a finding that ran)."""
        if self.error is not None:
            return "error"
        if self.kind == "finding":
            return "reported" if self.passed else "FAIL"
        return "pass" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-safe dict. Non-finite numbers in ``values`` become ``null``; the
        ``nonfinite`` entry lists where and what they were (``{"values.nets.c1": "1 inf"}``)."""
        d = asdict(self)
        d["figures"] = list(self.figures)
        d["captions"] = list(self.captions)
        d["nonfinite"] = _nonfinite(self.values, "values")
        d["values"] = jsonable(self.values)
        return jsonable(d)


def _nonfinite(v: Any, path: str) -> dict[str, str]:
    """Where ``v`` holds NaN / +-inf: ``{path: "2 NaN, 1 -inf"}`` (list indices dropped)."""
    out: dict[str, dict[str, int]] = {}

    def walk(x: Any, p: str) -> None:
        if isinstance(x, dict):
            for k, y in x.items():
                walk(y, f"{p}.{k}")
        elif isinstance(x, list | tuple):
            for y in x:
                walk(y, p)
        elif isinstance(x, np.ndarray | torch.Tensor):
            walk(np.asarray(x.detach().cpu() if torch.is_tensor(x) else x).tolist(), p)
        elif isinstance(x, float | np.floating) and not math.isfinite(float(x)):
            word = "NaN" if math.isnan(float(x)) else ("inf" if x > 0 else "-inf")
            c = out.setdefault(p, {})
            c[word] = c.get(word, 0) + 1

    walk(v, path)
    return {p: ", ".join(f"{n} {w}" for w, n in c.items()) for p, c in out.items()}


class Memo:
    """Measurements shared by the experiments of one ``reproduce`` call (e.g. claims 2-5 read
    the same sweep nets): an explicit object passed to ``measure``, never a module global."""

    def __init__(self) -> None:
        self._d: dict[Hashable, Any] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value stored under ``key``, computed by ``compute()`` on first use."""
        if key not in self._d:
            self._d[key] = compute()
        return self._d[key]

    def __len__(self) -> int:
        return len(self._d)


def task_spec(name: str, **kwargs: Any) -> TaskSpec:
    return TaskSpec(name, tuple(sorted(kwargs.items())))


def run_config(task: TaskSpec, model: ModelSpec, stages: Sequence[Stage], *, seed: int = 0,
               dtype: str = "float32") -> RunConfig:
    """The run config of one planned training run (float32, logged every 250 steps, no
    intermediate checkpoints; ``device`` is the caller's to set, it is not in the digest)."""
    return RunConfig(task=task, model=model, stages=tuple(stages), seed=seed, dtype=dtype,
                     log_every=250, checkpoint_every=None)


def require_status(runs: Sequence[Run], allowed: tuple[str, ...] = ("completed",)) -> None:
    """Raise :class:`BnstructError` naming the first run whose status is not ``allowed``."""
    for r in runs:
        if r.status not in allowed:
            raise BnstructError(f"run {r.path} ended {r.status}: the experiment's recipe is "
                                "unstable for this configuration")


def float64_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of ``model`` in eval mode (the stored float32 weights, cast once); the
    model itself is left as it is."""
    m = copy.deepcopy(model).to(torch.float64)
    m.eval()
    return m
