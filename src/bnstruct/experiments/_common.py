r"""What every experiment shares: the :class:`Claim` record, the mode names, training through
the store, and the per-layer measurements several claims read from the same runs.

Conventions (THEORY sections 1 and 3):

- ``lam`` multiplies :math:`\|\theta\|^2` (biases included); PyTorch's ``weight_decay = 2 lam``.
- Training runs in float32 (speed); every measurement is taken in float64 on the stored weights.
- Representations are the post-ReLU activations :math:`a_\ell` of the training inputs; their
  *effective rank* is the participation ratio of the singular values of the **centered**
  matrix :math:`a_\ell - \bar a_\ell` (the dimension of the variation; a constant offset
  carries no information about ``x``). The uncentered spectrum is recorded too.
- "Middle layers" are the weight matrices ``W_l`` with ``L/4 < l <= 3L/4`` (rounded so that at
  least one layer is kept), away from the input and output layers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from ..config import ModelSpec, RunConfig
from ..errors import BnstructError, ConfigError
from ..store import Run, run
from ..tasks import TaskSpec
from ..training import Stage, default_recipe

__all__ = ["Claim", "Mode", "MODES", "Context", "train_run", "layer_table", "middle_layers",
           "SweepConfig", "sweep_runs", "loglog_fit", "NEAR_ONE", "SMALL", "REP_RANK_METHOD"]

Mode = Literal["smoke", "quick", "full"]
MODES: tuple[str, ...] = ("smoke", "quick", "full")

#: a weight singular value counts as "near 1" when it lies in [1/NEAR_ONE_FACTOR, NEAR_ONE_FACTOR]
NEAR_ONE = (0.5, 2.0)
#: ... and as "small" when below this (absolute; at L -> inf they are O(L^-1/2))
SMALL = 0.5
#: effective-rank method used for representations (participation ratio of centered spectra)
REP_RANK_METHOD = "participation"


@dataclass(frozen=True)
class Claim:
    """The verdict on one claim of the paper, as written to ``claims.json``.

    ``measured``/``expected``/``tolerance`` are short human-readable strings (the table);
    ``values`` holds the numbers behind them (JSON-safe). ``kind`` is ``"claim"`` (pass/fail
    against the paper) or ``"finding"`` (reported, passes when it ran to a verdict).
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
    kind: Literal["claim", "finding"] = "claim"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["figures"] = list(self.figures)
        d["values"] = _json_safe(self.values)
        return d


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.ndarray | torch.Tensor):
        return _json_safe(np.asarray(v).tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


@dataclass(frozen=True)
class Context:
    """Where an experiment writes: ``store`` (run directories), ``figdir`` (PNG files),
    ``device`` for training (``auto | cpu | cuda``), and an optional progress callback
    ``progress(message)`` called before each training run."""

    store: Path
    figdir: Path
    device: str = "cpu"
    progress: Callable[[str], None] | None = None

    def note(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)


def train_run(ctx: Context, task: TaskSpec, model: ModelSpec, stages: Sequence[Stage], *,
              seed: int = 0, dtype: str = "float32", allow_diverged: bool = False) -> Run:
    """Train (or reuse from ``ctx.store``) one run; a diverged run is an error unless
    ``allow_diverged``."""
    cfg = RunConfig(task=task, model=model, stages=tuple(stages), seed=seed, dtype=dtype,
                    device=ctx.device, log_every=250, checkpoint_every=None)
    ctx.note(f"{task.name} {model.kind} L={model.depth}")
    r = run(cfg, ctx.store, resume=True, progress=False)
    if r.status != "completed" and not (allow_diverged and r.status == "diverged"):
        raise BnstructError(f"run {r.path} ended {r.status}: the experiment's recipe is "
                            "unstable for this configuration")
    return r


def task_spec(name: str, **kwargs: Any) -> TaskSpec:
    return TaskSpec(name, tuple(sorted(kwargs.items())))


def middle_layers(L: int) -> list[int]:
    """1-based indices ``l`` of the middle weight matrices: ``L/4 < l <= 3L/4``."""
    lo, hi = int(math.floor(L / 4)) + 1, int(math.floor(3 * L / 4))
    if hi < lo:
        lo = hi = (L + 1) // 2
    return list(range(lo, hi + 1))


def _pr(s: torch.Tensor) -> float:
    from ..diagnostics import effective_rank

    return effective_rank(s, method=REP_RANK_METHOD)


@torch.no_grad()
def layer_table(model: torch.nn.Module, X: torch.Tensor, k: int, *, n_sv: int = 6
                ) -> pd.DataFrame:
    """One row per weight matrix ``W_l`` (``l = 1..L``) of ``model`` (float64):

    ``s1..s{n_sv}`` (singular values of ``W_l``), ``n_near_1`` (count in :data:`NEAR_ONE`),
    ``s_k1`` (:math:`s_{k+1}`), ``mean_align`` (:math:`|\\cos|` between the right singular
    vector of :math:`s_{k+1}` and the mean of the layer's input :math:`\\bar a_{\\ell-1}`:
    near 1 when the extra direction carries the constant offset), ``rep_rank`` and
    ``rep_rank_uncentered`` of the representation :math:`a_\\ell` handed on by layer ``l``
    (participation ratio; ``l = L`` is the output), ``rep_rank_threshold`` (number of singular
    values of the centered representation above 0.1 of the largest: secondary evidence, no
    verdict uses it), ``middle`` (bool).
    """
    from ..diagnostics import effective_rank, representations, weight_spectra

    m64 = _to64(model)
    X = X.to(torch.float64)
    spectra = weight_spectra(m64)
    reps = representations(m64, X)
    ins = [X, *reps[:-1]]
    L = len(spectra)
    mids = set(middle_layers(L))
    rows = []
    for l, (s, W, a_in, a_out) in enumerate(zip(spectra, _weights(m64), ins, reps,
                                               strict=True), start=1):
        row: dict[str, Any] = {"depth": L, "layer": l, "middle": l in mids,
                               "fro2": float(s.pow(2).sum())}
        for i in range(n_sv):
            row[f"s{i + 1}"] = float(s[i]) if i < s.numel() else 0.0
        row["n_near_1"] = int(((s >= NEAR_ONE[0]) & (s <= NEAR_ONE[1])).sum())
        row["s_k1"] = float(s[k]) if k < s.numel() else 0.0
        mu = a_in.mean(0)
        if k < min(W.shape) and float(mu.norm()) > 0:
            Vh = torch.linalg.svd(W, full_matrices=False).Vh
            row["mean_align"] = float((Vh[k] @ mu).abs() / mu.norm())
        else:
            row["mean_align"] = float("nan")
        sv_c = torch.linalg.svdvals(a_out - a_out.mean(0))
        row["rep_rank"] = _pr(sv_c)
        row["rep_rank_uncentered"] = _pr(torch.linalg.svdvals(a_out))
        row["rep_rank_threshold"] = effective_rank(sv_c, "threshold")
        rows.append(row)
    return pd.DataFrame(rows)


def _to64(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    m = copy.deepcopy(model).to(torch.float64)
    m.eval()
    return m


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    from ..models import linear_layers

    return [lin.weight.detach() for lin in linear_layers(model)]


@dataclass(frozen=True)
class SweepConfig:
    """A depth sweep of ReLU MLPs on one task with one recipe (shared by claims 2-5).

    ``steps`` is the default recipe's total; deeper nets get ``steps_per_layer`` more steps
    per layer beyond ``depths[0]`` (deep nets converge slower)."""

    task: str = "composite"
    task_kwargs: tuple[tuple[str, Any], ...] = (("k", 2), ("n_train", 256))
    depths: tuple[int, ...] = (6, 9, 12, 16)
    width: int = 64
    lam: float = 0.01
    lr: float = 1.5e-3
    steps: int = 6000
    steps_per_layer: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if len(set(self.depths)) < 2:
            raise ConfigError(f"a depth sweep needs >= 2 distinct depths, got {self.depths}")

    @property
    def k(self) -> int:
        return int(dict(self.task_kwargs).get("k", 2))

    def stages(self, L: int) -> tuple[Stage, ...]:
        extra = max(0, L - min(self.depths)) * self.steps_per_layer
        return default_recipe(self.lam, self.steps + extra, self.lr)


def sweep_runs(ctx: Context, sw: SweepConfig) -> list[Run]:
    """Train (or reuse) one run per depth of ``sw``, in depth order."""
    spec = TaskSpec(sw.task, tuple(sorted(sw.task_kwargs)))
    return [train_run(ctx, spec, ModelSpec("mlp", sw.width, L), sw.stages(L), seed=sw.seed)
            for L in sorted(sw.depths)]


def timed(fn: Callable[[], Claim]) -> Claim:
    """Run ``fn`` and stamp the wall time on its claim."""
    import dataclasses

    t0 = time.perf_counter()
    c = fn()
    return dataclasses.replace(c, seconds=time.perf_counter() - t0)


def loglog_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of log y against log x and its standard error (nan with < 2
    points, one distinct x or y <= 0; the error is nan with < 3 points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2 or np.any(y <= 0) or np.unique(x).size < 2:
        return float("nan"), float("nan")
    lx, ly = np.log(x), np.log(y)
    b, a = np.polyfit(lx, ly, 1)
    if x.size < 3:
        return float(b), float("nan")
    resid = ly - (a + b * lx)
    se = np.sqrt(resid @ resid / (x.size - 2) / ((lx - lx.mean()) @ (lx - lx.mean())))
    return float(b), float(se)


def fmt(x: float, nd: int = 3) -> str:
    """Compact number formatting for the claims table."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return str(x)
    return f"{x:.{nd}g}"


@dataclass(frozen=True)
class SweepResult:
    """Measurements of a depth sweep: ``nets`` one row per net (depth, param_norm2, rel_fit,
    rel_test_error, c1 = param_norm2 - kL, max/median 2 log|Jf(x)|_k over the training points,
    min_slack of the bottleneck inequality at k), ``layers`` the concatenated
    :func:`layer_table` of every net, ``bound`` one row per (net, point) of
    :func:`bnstruct.bottleneck_bound`."""

    k: int
    nets: pd.DataFrame
    layers: pd.DataFrame
    bound: pd.DataFrame


_SWEEP_CACHE: dict[tuple[str, SweepConfig], SweepResult] = {}


def sweep_measure(ctx: Context, sw: SweepConfig) -> SweepResult:
    """Train (or reuse) the sweep and measure every net once per process (cached)."""
    from ..diagnostics import bottleneck_bound

    key = (str(Path(ctx.store).resolve()), sw)
    if key in _SWEEP_CACHE:
        return _SWEEP_CACHE[key]
    k = sw.k
    nets, layers, bounds = [], [], []
    for r in sweep_runs(ctx, sw):
        L = r.config.model.depth
        X = r.task.X.to(torch.float64)
        m64 = _to64(r.model)
        layers.append(layer_table(m64, X, k))
        b = bottleneck_bound(m64, X, k)
        b.insert(0, "depth", L)
        bounds.append(b)
        fin = r.summary["final"]
        lp = b["log_pdet2"].to_numpy()
        lp = lp[np.isfinite(lp)]
        nets.append({"depth": L, "param_norm2": float(b["param_norm2"].iloc[0]),
                     "rel_fit": fin.get("rel_fit"), "rel_test_error": fin.get("rel_test_error"),
                     "c1": float(b["c1"].iloc[0]),
                     "log_pdet2_max": float(lp.max()) if lp.size else float("-inf"),
                     "log_pdet2_median": float(np.median(lp)) if lp.size else float("-inf"),
                     "min_slack": float(np.nanmin(b["slack"].to_numpy())),
                     "seconds": r.summary.get("seconds")})
    res = SweepResult(k, pd.DataFrame(nets), pd.concat(layers, ignore_index=True),
                      pd.concat(bounds, ignore_index=True))
    _SWEEP_CACHE[key] = res
    return res


#: the composite depth sweep shared by claims 2-5, per mode.
#: quick (unit-scale data, E||x||^2 = E||y||^2 = 1): lam 0.01 gives middle layers with exactly
#: 2 singular values near 1 and s_3 ~ 0.01-0.05 at every depth 8..20, c1 = norm2 - 2L ~ 15-17
#: constant, relative train error 4-6%; lam 0.005 fits better (1.5-2.5%) but leaves s_3 ~ 0.1-0.8
#: over half of the middle window (not converged in this budget; L = 8 has 3 values near 1).
#: Six depths for the two depth fits (claims 2, 3); deeper nets get 250 more steps per layer.
SWEEPS = {
    "smoke": SweepConfig(task_kwargs=(("k", 2), ("n_train", 64)), depths=(3, 4, 5), width=16,
                         steps=300),
    "quick": SweepConfig(depths=(8, 10, 12, 14, 16, 20), lam=0.01, steps=6000,
                         steps_per_layer=250),
    "full": SweepConfig(task_kwargs=(("k", 2), ("n_train", 1000)), depths=(8, 12, 16, 20, 25, 30),
                        width=200, lam=2e-3, steps=40000, steps_per_layer=1000),
}
