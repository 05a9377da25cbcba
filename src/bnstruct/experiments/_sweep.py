r"""The composite depth sweep that claims 2-5 (and 7) read: its config, its planned runs,
and one measurement per net (:func:`net_layers`: analyze's per-layer table plus the
experiments' own columns, read from the same evaluation).

The per-layer table of a net is :func:`bnstruct.analyze`'s ``layers`` (``near_one``: the count
in :data:`~bnstruct.conventions.NEAR_ONE`; ``middle``:
:func:`~bnstruct.conventions.middle_layers`; ``rep_erank_participation`` /
``rep_erank_threshold`` / ``rep_rank_numerical``: ranks of the **centered**
representation). Experiments only add their own columns (:data:`OWN_LAYER_COLUMNS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import ModelSpec, RunConfig
from ..diagnostics import Analysis, Evaluation, analyze_evaluation
from ..errors import ConfigError
from ..store import Run
from ..tasks import TaskSpec
from ..training import Stage, adam_lr, default_recipe
from ._records import Memo, require_status, run_config

__all__ = ["net_layers", "OWN_LAYER_COLUMNS", "SweepConfig", "SweepResult", "SWEEPS",
           "sweep_plan", "sweep_measure"]

#: columns an experiment adds to :func:`bnstruct.analyze`'s per-layer table (:func:`net_layers`)
OWN_LAYER_COLUMNS = ("run", "depth", "seed", "k", "mean_align",
                     "rep_erank_participation_uncentered", "rep_energy_outside_k",
                     "rep_energy_kth")


@torch.no_grad()
def _own_columns(ev: Evaluation, k: int) -> pd.DataFrame:
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
    Float64, from the evaluation ``ev`` analyze read (no second float64 copy)."""
    from ..conventions import center, effective_rank

    X64, reps = ev.X, ev.representations()
    rows = []
    for W, a_in, a_out in zip(ev.weights, [X64, *reps[:-1]], reps, strict=True):
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


def net_layers(run: Run, k: int) -> tuple[pd.DataFrame, Analysis]:
    """``(layers, analysis)`` of one trained net: ``analysis = bnstruct.analyze(run.model,
    run.task.X, k, ntk=False)`` (exactly what ``bnstruct analyze`` shows for the run; its
    ``bound`` is the bottleneck inequality at ``k``) and its ``layers`` table with
    :data:`OWN_LAYER_COLUMNS` added (``run``: the run directory's name), all read from one
    float64 evaluation."""
    ev = Evaluation(run.model, run.task.X)
    a = analyze_evaluation(ev, k, ntk=False)
    own = _own_columns(ev, k)
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
    r"""A depth sweep of ReLU MLPs on one task with one recipe (shared by claims 2-5), one net
    per (depth, seed).

    ``steps`` is the default recipe's total; deeper nets get ``steps_per_layer`` more steps
    per layer beyond ``depths[0]`` (deep nets converge slower).

    The penalty: ``lam`` at every depth, or, with ``lam_depth`` set, :math:`\lambda_L =
    \Lambda / L` (``Lambda = lam_depth``; ``lam`` is then unused). Why the product: the
    objective at a net of the depth expansion is :math:`\text{fit} + \lambda (L R_0 + R_1 +
    \dots)`, so :math:`\lambda L` is the price of one more latent direction (the rank cost)
    and ``lam_depth`` fixes it across depths; a fixed ``lam`` makes a rank-``k`` function
    ``L / L'`` times dearer at depth ``L`` than at ``L'``, which can move the regularized
    optimum itself to a lower rank at the deepest ``L`` (docs/theory.md#regime-map)."""

    task: str = "composite"
    task_kwargs: tuple[tuple[str, Any], ...] = (("k", 2), ("n_train", 256))
    depths: tuple[int, ...] = (6, 9, 12, 16)
    width: int = 64
    lam: float = 0.01
    lam_depth: float | None = None
    lr: float | None = None
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

    @property
    def adam_lr(self) -> float:
        """The recipe's Adam learning rate: ``lr``, or by default
        :func:`bnstruct.training.adam_lr` of the width (1.5e-3 at width 64)."""
        return self.lr if self.lr is not None else adam_lr(self.width)

    def lam_at(self, L: int) -> float:
        """The penalty weight of the nets of depth ``L``."""
        return self.lam if self.lam_depth is None else self.lam_depth / L

    def stages(self, L: int) -> tuple[Stage, ...]:
        extra = max(0, L - min(self.depths)) * self.steps_per_layer
        return default_recipe(self.lam_at(L), self.steps + extra, self.adam_lr)

    def _lam_words(self) -> str:
        if self.lam_depth is None:
            return f"lam = {self.lam:g}"
        return (f"lam = {self.lam_depth:g} / L (lam L = {self.lam_depth:g}: "
                + ", ".join(f"{self.lam_at(L):.3g} at L = {L}" for L in
                            (min(self.depths), max(self.depths))) + ")")

    def describe(self) -> str:
        """One line for statements and notes, generated from the config."""
        return (f"{self.task} (k = {self.k}), ReLU MLPs of width {self.width} at depths "
                f"{', '.join(map(str, sorted(self.depths)))}, {len(self.seeds)} seed(s) each, "
                f"{self._lam_words()}, Adam lr {self.adam_lr:.3g}"
                + ("" if self.lr is not None else " (1.5e-3 sqrt(64 / width))")
                + f", {self.steps} steps"
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

    def ranks(self) -> pd.DataFrame:
        """Per depth, the learned rank of each net (prediction 7: a too-deep net can find a
        lower rank): ``n`` nets, ``found_k`` (bottleneck rank ``k`` and ``rel_fit <
        NO_FIT``), ``lower`` (rank < k), ``higher`` (rank > k), ``no_fit``."""
        from ._statistics import NO_FIT

        n = self.nets
        fits = n["rel_fit"].astype(float) < NO_FIT
        r = n["bottleneck_rank"].astype(int)
        return (n.assign(found_k=fits & (r == self.k), lower=fits & (r < self.k),
                         higher=fits & (r > self.k), no_fit=~fits)
                .groupby("depth")[["found_k", "lower", "higher", "no_fit"]].sum()
                .astype(int).assign(n=n.groupby("depth").size()).reset_index())

    def rank_words(self) -> str:
        """One phrase: per depth, how many nets found the task's rank (and what the others
        did)."""
        parts = []
        for r in self.ranks().itertuples(index=False):
            other = [f"{v} {w}" for v, w in ((r.lower, "lower"), (r.higher, "higher"),
                                             (r.no_fit, "fit nothing")) if v]
            parts.append(f"L={int(r.depth)} {int(r.found_k)}/{int(r.n)}"
                         + (f" ({', '.join(other)})" if other else ""))
        return f"nets with learned rank {self.k}: " + ", ".join(parts)

    def no_fit(self) -> pd.DataFrame:
        """The nets that fit nothing (``rel_fit >= NO_FIT`` or NaN): none may count as a
        pass."""
        from ._statistics import NO_FIT

        return self.nets[~(self.nets["rel_fit"].astype(float) < NO_FIT)]

    def guard(self) -> tuple[str, list[str]]:
        """What every sweep claim adds to its verdict: the :meth:`rank_words` phrase (empty
        when the nets carry no learned rank) and one failure reason per net that fits
        nothing ([] when every net fits)."""
        words = self.rank_words() if "bottleneck_rank" in self.nets else ""
        bad = self.no_fit() if "rel_fit" in self.nets else self.nets.iloc[:0]
        why = [f"{len(bad)} net(s) fit nothing (relative train error >= 0.5: "
               + ", ".join(f"L={int(r.depth)} seed {int(r.seed)} {float(r.rel_fit):.2g}"
                           for r in bad.itertuples(index=False))
               + "); a net that fits nothing never counts toward a pass"] if len(bad) else []
        return words, why

    @property
    def n_seeds(self) -> int:
        return int(self.nets.groupby("depth")["seed"].nunique().min()) if len(self.nets) else 0


def _measure_net(run: Run, k: int) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame,
                                             list[np.ndarray]]:
    lay, a = net_layers(run, k)
    s = a.summary
    if a.bound is None:
        raise ConfigError(f"run {run.path} is not a chain: the sweep needs its bound")
    b = a.bound.copy()
    b.insert(0, "depth", run.config.model.depth)
    b.insert(1, "seed", run.config.seed)
    fin = run.summary["final"]
    net = {"run": run.path.name, "depth": run.config.model.depth, "seed": run.config.seed,
           "param_norm2": s["param_norm2"], "rel_fit": fin.get("rel_fit"),
           "rel_test_error": fin.get("rel_test_error"), "c1": s["bound_c1"],
           "log_pdet2_max": s["log_pdet2_max"], "log_pdet2_median": s["log_pdet2_median"],
           "bottleneck_rank": s["bottleneck_rank"], "jacobian_rank": s["jacobian_rank"],
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
#: The protocol (docs/theory.md#regime-map): one fixed lam per sweep, so that within the
#: task's rank the learned function's trade-off fit + lam R1 is the same at every depth (the
#: depth expansion's slope is R0 of one function); lam L (the rank cost of a direction) spans
#: 0.08-0.2 over the depths in both modes, inside the window the regime map measured (lam L =
#: 0.05: unstructured; 0.2: structured; 0.8: collapsed to rank 1). lam = lam_depth / L was
#: measured too: it keeps rank 2 everywhere but moves the function with depth (relative error
#: 21% at L = 8, 4% at L = 20) and inflates the norm's slope (R0_hat 2.78 ± 0.05 at quick).
#: Adam at adam_lr(width). quick (unit-scale data): four depths for the two depth fits, 125
#: more steps per layer beyond L = 8. Seeds: 3 per depth in quick and full (every verdict
#: reads every net; per-depth numbers are mean ± standard error over seeds), 2 in smoke.
SWEEPS: dict[str, SweepConfig] = {
    "smoke": SweepConfig(task_kwargs=(("k", 2), ("n_train", 64)), depths=(3, 4, 5), width=16,
                         steps=300, seeds=(0, 1)),
    "quick": SweepConfig(depths=(8, 12, 16, 20), lam=0.01, steps=6000,
                         steps_per_layer=125, seeds=(0, 1, 2)),
    # full: the paper's width (200) and depth (25; 2305.19008's first experiment), lam L in
    # the quick sweep's window (0.08 at L = 10 to 0.2 at L = 25; lam = 0.005 left L = 10
    # unstructured), Adam at 8.5e-4 (adam_lr(200): at 1.5e-3 one of three L = 25 nets
    # collapsed to rank 1), sized to train with everything else in <= 60 min on a 2-core CPU
    "full": SweepConfig(depths=(10, 15, 20, 25), width=200, lam=0.008, steps=8000,
                        steps_per_layer=200, seeds=(0, 1, 2)),
}


