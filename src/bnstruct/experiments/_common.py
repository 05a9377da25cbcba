r"""What every experiment shares: the :class:`Claim` record, the mode names, the planned run
configs, the explicit per-reproduce :class:`Memo`, and the composite depth sweep that claims
2-5 (and 7) read.

Conventions (docs/theory.md, sections 1 and 4; defined once in :mod:`bnstruct.conventions`):

- ``lam`` multiplies :math:`\|\theta\|^2` (biases included); PyTorch's ``weight_decay = 2 lam``.
- Training runs in float32 (speed); every measurement is taken in float64 on the stored weights.
- The per-layer table of a net is :func:`bnstruct.analyze`'s ``layers`` (``near_one``: the count
  in :data:`~bnstruct.conventions.NEAR_ONE`; ``middle``:
  :func:`~bnstruct.conventions.middle_layers`; ``rep_erank_participation`` /
  ``rep_erank_threshold`` / ``rep_rank_numerical``: ranks of the **centered**
  representation). Experiments only add their own columns (:data:`OWN_LAYER_COLUMNS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd
import torch

from .._io import jsonable
from ..config import ModelSpec, RunConfig
from ..errors import BnstructError, ConfigError
from ..store import Run
from ..tasks import TaskSpec
from ..training import Stage, default_recipe

__all__ = ["Claim", "Kind", "Mode", "MODES", "Memo", "run_config", "task_spec",
           "require_status", "net_layers", "OWN_LAYER_COLUMNS", "SweepConfig", "SweepResult",
           "SWEEPS", "sweep_plan", "sweep_measure", "loglog_fit", "linear_fit", "mean_se",
           "fmt_mean_se", "ON_MIN", "MAX_OFF_GROWTH", "AlmostAll", "almost_all"]

Mode = Literal["smoke", "quick", "full"]
MODES: tuple[str, ...] = ("smoke", "quick", "full")
Kind = Literal["claim", "finding"]
T = TypeVar("T")

#: columns an experiment adds to :func:`bnstruct.analyze`'s per-layer table (:func:`net_layers`)
OWN_LAYER_COLUMNS = ("run", "depth", "seed", "k", "mean_align",
                     "rep_erank_participation_uncentered", "rep_energy_outside_k",
                     "rep_energy_kth")


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
    ``bound`` (what it is judged against, e.g. ``"|R0_hat - 2| + 2 SE <= 0.5"``), ``checked``
    (one plain sentence of what was checked) and ``why`` (for a failure: why, in words; empty
    when it passed). ``captions`` has one caption per figure.
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


def _to64(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    m = copy.deepcopy(model).to(torch.float64)
    m.eval()
    return m


@torch.no_grad()
def _own_columns(model: torch.nn.Module, X: torch.Tensor, k: int) -> pd.DataFrame:
    r"""Per layer: ``mean_align`` (:math:`|\cos|` between the right singular vector of
    :math:`s_{k+1}(W_\ell)` and the mean of the layer's input :math:`\bar a_{\ell-1}`: near 1
    when the extra direction carries the constant offset of the post-ReLU representation;
    NaN when ``W_l`` has no ``(k+1)``-th value or the mean is 0),
    ``rep_erank_participation_uncentered`` (participation ratio of the *uncentered*
    representation, for comparison with analyze's centered one), and from the singular values
    :math:`s_i` of the **centered** representation (whose
    :func:`~bnstruct.conventions.energy_rank` is analyze's ``rep_energy_rank``):
    ``rep_energy_outside_k``
    (:math:`\sum_{i>k} s_i^2 / \sum_i s_i^2`) and ``rep_energy_kth``
    (:math:`s_k^2 / \sum_i s_i^2`, 0 when the representation has fewer than k values).
    Float64."""
    from ..conventions import center, effective_rank
    from ..diagnostics import representations
    from ..models import linear_layers

    m64 = _to64(model)
    X64 = X.to(torch.float64)
    reps = representations(m64, X64)
    rows = []
    for lin, a_in, a_out in zip(linear_layers(m64), [X64, *reps[:-1]], reps, strict=True):
        W = lin.weight.detach()
        mu = a_in.mean(0)
        align = math.nan
        if k < min(W.shape) and float(mu.norm()) > 0:
            Vh = torch.linalg.svd(W, full_matrices=False).Vh
            align = float((Vh[k] @ mu).abs() / mu.norm())
        sc = torch.linalg.svdvals(center(a_out)).numpy()
        e = sc ** 2
        tot = float(e.sum())
        rows.append({"mean_align": align, "rep_erank_participation_uncentered":
                     effective_rank(torch.linalg.svdvals(a_out), "participation"),
                     "rep_energy_outside_k": float(e[k:].sum() / tot) if tot > 0 else math.nan,
                     "rep_energy_kth": (float(e[k - 1] / tot) if e.size >= k else 0.0)
                     if tot > 0 else math.nan})
    return pd.DataFrame(rows)


def net_layers(run: Run, k: int) -> tuple[pd.DataFrame, Any]:
    """``(layers, analysis)`` of one trained net: ``analysis = bnstruct.analyze(run.model,
    run.task.X, k, ntk=False)`` (exactly what ``bnstruct analyze`` shows for the run) and its
    ``layers`` table with :data:`OWN_LAYER_COLUMNS` added (``run``: the run directory's name)."""
    from ..diagnostics import analyze

    a = analyze(run.model, run.task.X, k, ntk=False)
    own = _own_columns(run.model, run.task.X, k)
    lay = a.layers.copy()
    for i, (col, val) in enumerate((("run", run.path.name), ("depth", run.config.model.depth),
                                    ("seed", run.config.seed), ("k", k))):
        lay.insert(i, col, val)
    for col in own.columns:
        lay[col] = own[col].to_numpy()
    return lay, a


# --------------------------------------------------------------------------- the depth sweep


@dataclass(frozen=True)
class SweepConfig:
    """A depth sweep of ReLU MLPs on one task with one recipe (shared by claims 2-5), one net
    per (depth, seed).

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
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if len(set(self.depths)) < 2:
            raise ConfigError(f"a depth sweep needs >= 2 distinct depths, got {self.depths}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct and non-empty, got {self.seeds}")

    @property
    def k(self) -> int:
        return int(dict(self.task_kwargs).get("k", 2))

    @property
    def task_spec(self) -> TaskSpec:
        return TaskSpec(self.task, tuple(sorted(self.task_kwargs)))

    def stages(self, L: int) -> tuple[Stage, ...]:
        extra = max(0, L - min(self.depths)) * self.steps_per_layer
        return default_recipe(self.lam, self.steps + extra, self.lr)

    def describe(self) -> str:
        """One line for statements and notes, generated from the config."""
        return (f"{self.task} (k = {self.k}), ReLU MLPs of width {self.width} at depths "
                f"{', '.join(map(str, sorted(self.depths)))}, {len(self.seeds)} seed(s) each, "
                f"lam = {self.lam:g}, Adam lr {self.lr:g}, {self.steps} steps"
                + (f" + {self.steps_per_layer} per layer beyond L = {min(self.depths)}"
                   if self.steps_per_layer else ""))


def sweep_plan(sw: SweepConfig) -> list[RunConfig]:
    """One run per (depth, seed), depth-major (ascending depth, then the seeds in order)."""
    return [run_config(sw.task_spec, ModelSpec("mlp", sw.width, L), sw.stages(L), seed=s)
            for L in sorted(sw.depths) for s in sw.seeds]


@dataclass(frozen=True)
class SweepResult:
    """Measurements of a depth sweep.

    ``nets``: one row per net (run, depth, seed, param_norm2, rel_fit, rel_test_error,
    c1 = param_norm2 - kL, log_pdet2_max / log_pdet2_median of 2 log|Jf(x)|_k over the
    training points, min_slack of the bottleneck inequality at k; from analyze's summary);
    ``layers``: every net's :func:`net_layers` table, concatenated; ``bound``: one row per
    (net, point) of :func:`bnstruct.bottleneck_bound`; ``spectra``: run name -> the full
    singular values of each ``W_l`` (analyze's ``weight_spectra``)."""

    k: int
    nets: pd.DataFrame
    layers: pd.DataFrame
    bound: pd.DataFrame
    spectra: dict[str, list[np.ndarray]] = field(default_factory=dict)

    @property
    def n_seeds(self) -> int:
        return int(self.nets.groupby("depth")["seed"].nunique().min()) if len(self.nets) else 0


def _measure_net(run: Run, k: int) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame,
                                             list[np.ndarray]]:
    from ..diagnostics import bottleneck_bound

    lay, a = net_layers(run, k)
    s = a.summary
    b = bottleneck_bound(run.model, run.task.X, k)
    b.insert(0, "depth", run.config.model.depth)
    b.insert(1, "seed", run.config.seed)
    fin = run.summary["final"]
    net = {"run": run.path.name, "depth": run.config.model.depth, "seed": run.config.seed,
           "param_norm2": s["param_norm2"], "rel_fit": fin.get("rel_fit"),
           "rel_test_error": fin.get("rel_test_error"), "c1": s["bound_c1"],
           "log_pdet2_max": s["log_pdet2_max"], "log_pdet2_median": s["log_pdet2_median"],
           "min_slack": s["bound_slack_min"], "seconds": run.summary.get("seconds")}
    return net, lay, b, list(a.weight_spectra)


def sweep_measure(sw: SweepConfig, runs: Sequence[Run], *, memo: Memo | None = None
                  ) -> SweepResult:
    """Measure every net of the sweep (``runs``: :func:`sweep_plan`'s runs, in its order).
    Each net is measured once per ``memo`` (claims 2-5 share them through it)."""
    require_status(runs)
    memo = memo if memo is not None else Memo()
    k = sw.k
    parts = [memo.get(("sweep-net", str(r.path.resolve()), k), partial(_measure_net, r, k))
             for r in runs]
    nets = pd.DataFrame([p[0] for p in parts])
    return SweepResult(k, nets, pd.concat([p[1] for p in parts], ignore_index=True),
                       pd.concat([p[2] for p in parts], ignore_index=True),
                       {p[0]["run"]: p[3] for p in parts})


#: the composite depth sweep shared by claims 2-5, per mode.
#: quick (unit-scale data, E||x||^2 = E||y||^2 = 1): lam 0.01 gives middle layers with exactly
#: 2 singular values near 1 and s_3 ~ 0.01-0.05 at every depth 8..20, c1 = norm2 - 2L ~ 15-17
#: constant, relative train error 4-6%; lam 0.005 fits better (1.5-2.5%) but leaves s_3 ~ 0.1-0.8
#: over half of the middle window (not converged in this budget; L = 8 has 3 values near 1).
#: Six depths for the two depth fits (claims 2, 3); deeper nets get 250 more steps per layer.
#: Seeds: 3 per depth in quick and full (every verdict reads every net; per-depth numbers are
#: mean ± standard error over seeds), 2 in smoke (exercises the path). Seed 0's run configs
#: are the one-seed sweep's (same digests: earlier stores are reused).
SWEEPS: dict[str, SweepConfig] = {
    "smoke": SweepConfig(task_kwargs=(("k", 2), ("n_train", 64)), depths=(3, 4, 5), width=16,
                         steps=300, seeds=(0, 1)),
    "quick": SweepConfig(depths=(8, 10, 12, 14, 16, 20), lam=0.01, steps=6000,
                         steps_per_layer=250, seeds=(0, 1, 2)),
    # full: the paper's width (200) and depth (25; 2305.19008's first experiment), the
    # follow-ups' final penalty (docs/theory.md#setups: weight decay warm-up to 0.005; here
    # lam = 0.005), sized to train with everything else in <= 60 min on a 2-core CPU (4 depths
    # x 3 seeds)
    "full": SweepConfig(depths=(10, 15, 20, 25), width=200, lam=0.005, steps=8000,
                        steps_per_layer=200, seeds=(0, 1, 2)),
}


# --------------------------------------------------------------------------- "almost all layers"

#: "almost all layers" at finite depth (claims 3 and 4; docs/theory.md (section 5) reads it as
#: a limit: the number of layers where a statement fails stays bounded as L grows). The
#: smallest fraction of a net's layers that must satisfy it at the deepest depth: up to a
#: quarter of the layers
#: (the ends, where the net does its nonlinear work in more dimensions) may fail. Fixed before
#: any v2 run.
ON_MIN = 0.75
#: the count of failing layers may grow by at most this many per added layer (least-squares
#: slope over every net + 2 standard errors): a constant fraction 1 - ON_MIN of the layers
#: failing at every depth would reach it, a bounded count has slope ~0
MAX_OFF_GROWTH = 0.25


@dataclass(frozen=True)
class AlmostAll:
    """The "almost all layers" check of one statement over a sweep (:func:`almost_all`)."""

    slope: float
    slope_err: float
    deepest: int
    deepest_min_fraction: float
    growth_ok: bool
    deepest_ok: bool

    @property
    def passed(self) -> bool:
        return self.growth_ok and self.deepest_ok

    def describe(self) -> str:
        return (f"slope of the count vs L {self.slope:+.3f} ± {self.slope_err:.3f}; smallest "
                f"fraction at L = {self.deepest}: {self.deepest_min_fraction:.2f}")


def almost_all(nets: pd.DataFrame, off: str = "off", fraction: str = "on_fraction"
               ) -> AlmostAll:
    """Judge "almost all layers" from one row per net (``depth``, the count of failing layers
    ``off`` and the passing ``fraction``): the count does not grow with L (least-squares slope
    over every net + 2 SE < :data:`MAX_OFF_GROWTH`; with < 3 nets the error is unknown and the
    check fails) and every net at the deepest depth has ``fraction >=`` :data:`ON_MIN`."""
    slope, se = linear_fit(nets["depth"], nets[off])
    growth_ok = bool(np.isfinite(slope) and np.isfinite(se)
                     and slope + 2 * se < MAX_OFF_GROWTH)
    L = int(nets["depth"].max())
    fr = float(nets.loc[nets["depth"] == L, fraction].min(skipna=False))  # NaN fails
    return AlmostAll(slope, se, L, fr, growth_ok, bool(fr >= ON_MIN))


# --------------------------------------------------------------------------- small statistics


def loglog_fit(x: Any, y: Any) -> tuple[float, float]:
    """Least-squares slope of log y against log x and its standard error (nan with < 2
    points, one distinct x or y <= 0; the error is nan with < 3 points). Repeated x (seeds)
    are fine."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.any(x <= 0) or np.any(y <= 0):
        return float("nan"), float("nan")
    return linear_fit(np.log(x), np.log(y))


def linear_fit(x: Any, y: Any) -> tuple[float, float]:
    """Least-squares slope of y against x and its standard error (nan with < 2 points or one
    distinct x; the error is nan with < 3 points). Repeated x (seeds) are fine."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2 or np.unique(x).size < 2:
        return float("nan"), float("nan")
    b, a = np.polyfit(x, y, 1)
    if x.size < 3:
        return float(b), float("nan")
    resid = y - (a + b * x)
    se = np.sqrt(resid @ resid / (x.size - 2) / ((x - x.mean()) @ (x - x.mean())))
    return float(b), float(se)


def mean_se(v: Any) -> tuple[float, float]:
    """Mean and standard error of the mean (``std(ddof=1) / sqrt(n)``; nan for n < 2)."""
    a = np.asarray(v, dtype=float).ravel()
    if a.size == 0:
        return float("nan"), float("nan")
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")
    return float(a.mean()), se


def fmt_mean_se(v: Any, spec: str = ".3g") -> str:
    """``"m ± se"`` over seeds, or ``"m"`` for one seed."""
    m, se = mean_se(v)
    return f"{m:{spec}}" if not math.isfinite(se) else f"{m:{spec}} ± {se:{spec}}"
