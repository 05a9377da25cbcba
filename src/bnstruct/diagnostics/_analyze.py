r"""``analyze``: every diagnostic of one network gathered into a per-layer table and a summary.

Conventions (also returned in ``summary["thresholds"]`` / ``summary["conventions"]``):

- Layer ``l = 1..L`` is the weight matrix ``W_l`` (``[n_l, n_{l-1}]``) and its representation
  :math:`a_\ell = \sigma(z_\ell)` (``l < L``) or ``f(x)`` (``l = L``), as returned by
  :func:`~bnstruct.representations`.
- Representation spectra are the singular values of the **centered** matrix
  :math:`A_\ell - \mathbf 1 \bar a_\ell^T` (``[N, n_l]``, mean over the points): the dimension
  of the cloud of points, not its offset, computed in the compute dtype. The numerical rank
  uses numpy's rule ``s_i > s_1 max(N, n_l) eps`` with ``eps`` of the *model's* dtype (the
  precision its weights are known to).
- A singular value is **near 1** when it lies in :data:`bnstruct.conventions.NEAR_ONE`
  (``[0.5, 2]``); ``middle`` marks :func:`bnstruct.conventions.middle_layers`.
- A layer has a **clear gap at k** when ``s_k / s_{k+1} >= gap_min`` (2.0); ``gap_rank`` is
  the position ``i`` of the largest ratio ``s_i / s_{i+1}`` of its W among the significant
  values ``s_i >= threshold_rtol * s_1`` (0.1), ``gap_ratio`` that ratio.
- ``threshold`` effective ranks count ``s_i > 0.1 s_1``.
- Layers with ``min(n_l, n_{l-1}) < 2`` or all-zero weights are **skipped** (reason in the
  ``skipped`` column): their spectral ranks are NaN and they never enter the estimates.

The bottleneck rank of every model is :func:`bnstruct.conventions.bottleneck_rank` (one
definition, read from the weight spectra; ``summary["bottleneck_rank_method"]`` names the rule
that applied). The bottleneck's layer range is the longest run of consecutive layers with a
clear gap at ``k`` (chains) or of hidden representations with ``rep_energy_rank <= k``
(other models), ``k`` the given one, else the estimate.

Every number comes from one :class:`~bnstruct.diagnostics.Evaluation` (the model parsed and
cast once, one forward pass, one Jacobian, each SVD once); the table is built by one list of
column producers (:data:`~bnstruct.diagnostics._producers.PRODUCERS`) for every model, each a
function of that evaluation, and the summary likewise (:mod:`._summary`). All measurements
are in the compute dtype (float64 default), the representations included;
``summary["implementation"]`` names the Jacobian/NTK path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import conventions
from .._io import jsonable
from ..conventions import bottleneck_rank, skip_reason
from ..errors import ConfigError, DataError
from ._evaluation import Evaluation
from ._producers import (
    LAYER_COLUMNS,
    REP_COLUMNS,
    THEORY_COLUMNS,
    Context,
    layer_table,
    longest_run,
    representation_table,
)
from ._stationarity import stationarity_summary
from ._summary import (
    THRESHOLDS,
    Summary,
    bound_summary,
    conventions_summary,
    ntk_summary,
    objective_summary,
    pca,
)

__all__ = ["Analysis", "analyze", "analyze_evaluation", "leaky_analysis", "Summary", "THRESHOLDS",
           "LAYER_COLUMNS", "REP_COLUMNS", "THEORY_COLUMNS"]


@dataclass(frozen=True, eq=False)
class Analysis:
    """Result of :func:`analyze`.

    ``layers``: one row per layer, columns :data:`LAYER_COLUMNS`; ``summary``: scalars (see
    :func:`analyze`); ``weight_spectra[l-1]`` / ``rep_spectra[l-1]``: full singular values of
    ``W_l`` and of the centered representation of layer ``l``; ``pca``: ``[N, 2]`` coordinates
    of the points in the top two principal directions of layer ``summary["pca_layer"]``.
    """

    layers: pd.DataFrame
    summary: Summary
    weight_spectra: list[np.ndarray] = field(repr=False)
    rep_spectra: list[np.ndarray] = field(repr=False)
    pca: np.ndarray = field(repr=False)
    #: general models: one row per representation point (:data:`REP_COLUMNS`); chains: None
    representations: pd.DataFrame | None = field(default=None, repr=False)
    #: with ``conv_operator=True``: per weight layer, the circular conv operator's singular
    #: values (or why there are none)
    operator_spectra: list[np.ndarray | str] | None = field(default=None, repr=False)
    #: chains: both sides of the bottleneck inequality at ``summary["k"]``, one row per point
    #: (:func:`bnstruct.bottleneck_bound`'s table, computed once); other models: None
    bound: pd.DataFrame | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-safe dict (``json.dumps(..., allow_nan=False)`` works): ``summary``,
        ``layers`` (records), ``weight_spectra``, ``rep_spectra``. Non-finite numbers (NaN,
        +-inf) become ``None``."""
        d: dict[str, Any] = {
            "summary": dict(self.summary),
            "layers": self.layers.to_dict(orient="records"),
            "weight_spectra": self.weight_spectra,
            "rep_spectra": self.rep_spectra,
        }
        if self.representations is not None:
            d["representations"] = self.representations.to_dict(orient="records")
        if self.operator_spectra is not None:
            d["operator_spectra"] = self.operator_spectra
        out: dict[str, Any] = jsonable(d)
        return out

    def __repr__(self) -> str:
        from ._display import analysis_repr

        return analysis_repr(self)

    def _repr_html_(self) -> str:
        from ._display import analysis_html

        return analysis_html(self)

    def plot(self, path: Any = None, *, color: Any = None, color_label: str = "") -> Any:
        """The paper's figures for this network (see :func:`bnstruct.diagnostics.plot_analysis`);
        returns a ``matplotlib.figure.Figure``, saved to ``path`` when given. ``color``: one
        value per point to colour the bottleneck PCA (e.g. a latent or an invariant)."""
        from ._plots import plot_analysis

        return plot_analysis(self._plot_view(), path, color=color, color_label=color_label)

    def _plot_view(self) -> Analysis:
        """General models: the rank panel reads the representation table (``layer`` = its
        index) and the bottleneck range as indices into it."""
        if self.representations is None:
            return self
        reps = self.representations.rename(columns={"rep": "layer"})
        names = list(reps["name"])
        bl = self.summary["bottleneck_layers"]
        summary: Summary = {**self.summary, "bottleneck_layers": None if bl is None else
                            [names.index(bl[0]) + 1, names.index(bl[1]) + 1]}
        return Analysis(reps, summary, self.weight_spectra, self.rep_spectra, self.pca)


def _check_arguments(hessian: bool, Y: Any, lam: Any, jacobian_points: Any) -> None:
    if hessian and (Y is None or lam is None):
        raise ConfigError("hessian=True needs the targets Y and the penalty lam")
    if lam is not None and not (isinstance(lam, int | float) and lam >= 0):
        raise ConfigError(f"lam must be a number >= 0, got {lam!r}")
    if not isinstance(jacobian_points, int) or jacobian_points < 1:
        raise ConfigError(f"jacobian_points must be an integer >= 1, got {jacobian_points!r}")


def _check_k(ev: Evaluation, k: int | None) -> None:
    """A given ``k``: chains ``0 <= k <= min(sizes)``, other models ``<= min(d_out, d_in)``."""
    if k is None:
        return
    if ev.is_chain:
        ev.check_k(k)
        return
    J = ev.jacobian
    kmax = min(J.shape[1], J.shape[2])
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= kmax:
        raise ConfigError(f"k must be an integer with 0 <= k <= min(d_out, d_in) = {kmax}, "
                          f"got {k!r}")


def _check_finite(ev: Evaluation) -> None:
    bad = [name for name, W, b in zip(ev.weight_names, ev.weights, ev.biases, strict=True)
           if not all(bool(torch.isfinite(t).all()) for t in (W, b) if t is not None)]
    if bad:
        raise DataError(f"the model has non-finite parameters in {', '.join(bad)} (a diverged "
                        "run?): there is nothing to analyze")
    if not ev.is_chain:
        return
    big = torch.finfo(ev.model_dtype).max
    for l, A in enumerate(ev.representations(), start=1):
        if not bool(torch.isfinite(A).all()) or float(A.abs().max()) > big:
            raise DataError(f"the forward pass overflows {ev.model_dtype} at layer {l} "
                            "(a diverged run?): analyze a float64 copy, model.double(), or a "
                            "run that converged")


def _context(ev: Evaluation, k: int | None) -> tuple[Context, int, str]:
    """The producers' context, the estimated rank and the rule that gave it."""
    w = [s.cpu().numpy() for s in ev.weight_spectra]
    k_est, method = bottleneck_rank(w, jacobian_rank=int(ev.jacobian_ranks.max()))
    if k is None and not ev.is_chain:  # log|Jf|_k needs k <= min(d_out, d_in)
        J = ev.jacobian
        k_est = min(k_est, J.shape[1], J.shape[2])
    k_used = k_est if k is None else k
    c = Context(ev, w, [s.cpu().numpy() for s in ev.rep_spectra], [skip_reason(s) for s in w],
                k_used)
    return c, k_est, method


def _operator_spectra(ev: Evaluation) -> list[np.ndarray | str]:
    return [o if isinstance(o, str) else o.cpu().numpy() for o in ev.conv_operator_spectra()]


def _head(ev: Evaluation, c: Context, k_est: int, method: str, k_given: bool) -> Summary:
    """The summary keys every model has, up to the layer range (in the documented order)."""
    L, norm2 = c.depth, ev.param_norm2
    s: Summary = {}
    if ev.is_chain:
        s.update({"depth": L, "n_points": ev.n_points, "sizes": ev.require_chain().sizes,
                  "implementation": ev.implementation})
    else:
        s.update({"model": type(ev.model).__name__, "depth": L, "n_points": ev.n_points,
                  "n_representations": len(ev.rep_names),
                  "n_params": sum(p.numel() for p in ev.model.parameters()),
                  "implementation": ev.implementation,
                  "theory": "theory columns (near_one, s_k1, clear_gap_at_k, in_bottleneck, "
                            "balance) and the bottleneck inequality need a positively "
                            "homogeneous chain of Linear layers; this model is not one "
                            f"({ev.chain_reason})"})
    s.update({"param_norm2": norm2, "param_norm2_per_depth": norm2 / L if L else math.nan,
              "bottleneck_rank": k_est, "bottleneck_rank_method": method, "k": c.k,
              "k_source": "given" if k_given else "estimated"})
    return s


def analyze_evaluation(ev: Evaluation, k: int | None = None, *,
                       Y: torch.Tensor | None = None, lam: float | None = None,
                       ntk: bool = True, hessian: bool = False, lr: float | None = None,
                       conv_operator: bool = False, jacobian_points: int = 64) -> Analysis:
    """:func:`analyze` of an existing :class:`Evaluation` (its cached quantities are reused,
    e.g. by an experiment that reads more from the same evaluation)."""
    _check_arguments(hessian, Y, lam, jacobian_points)
    _check_k(ev, k)
    _check_finite(ev)
    c, k_est, method = _context(ev, k)
    layers = layer_table(c)
    reps = None if ev.is_chain else representation_table(c, jacobian_points)
    table = layers if reps is None else reps
    names = list(range(1, c.depth + 1)) if reps is None else list(reps["name"])
    run = longest_run([bool(f) for f in table["in_bottleneck"]])
    s = _head(ev, c, k_est, method, k is not None)
    s["bottleneck_layers"] = None if run is None else [names[run[0] - 1], names[run[1] - 1]]
    s["bottleneck_length"] = 0 if run is None else run[1] - run[0] + 1
    jr = ev.jacobian_ranks
    s.update({"jacobian_rank": int(jr.max()), "jacobian_rank_min": int(jr.min())})
    bound = ev.bound(c.k) if ev.is_chain else None
    s.update(bound_summary(ev, c.k, bound))  # type: ignore[typeddict-item]
    if ntk:
        s.update(ntk_summary(ev, c.depth))  # type: ignore[typeddict-item]
    s.update(objective_summary(ev, Y, lam, lr, hessian))  # type: ignore[typeddict-item]
    if ev.is_chain:  # when not to trust the numbers (needs Y and lam)
        s.update(stationarity_summary(ev.model, ev.X, Y, lam))  # type: ignore[typeddict-item]
    pl, coords = pca(c, run, list(table["rep_erank_entropy"]))
    s["pca_layer"] = names[pl - 1]
    s["thresholds"] = dict(THRESHOLDS) if reps is None else {
        **THRESHOLDS, "energy_tol": conventions.ENERGY_TOL}
    s["conventions"] = conventions_summary(ev)
    ops = _operator_spectra(ev) if conv_operator else None
    return Analysis(layers, s, c.w, c.r, coords, reps, ops, bound)


def analyze(model: nn.Module, X: torch.Tensor, k: int | None = None, *,
            Y: torch.Tensor | None = None, lam: float | None = None, ntk: bool = True,
            hessian: bool = False, lr: float | None = None,
            dtype: torch.dtype = torch.float64, implementation: str = "auto",
            output: int | str | Callable[[Any], torch.Tensor] | None = None,
            layers: Sequence[str] | None = None, conv_operator: bool = False,
            jacobian_points: int = 64) -> Analysis:
    r"""Analyze a network layer by layer on the points ``X`` (``[N, d_in]``).

    Args:
        model: any ``nn.Module``; one whose traced graph is a chain of Linear / ReLU /
            LeakyReLU / Identity / Dropout (:func:`bnstruct.models.linear_chain`: an MLP in
            any wrapper) gets the theory's columns.
        X: points where representations, Jacobians, the bound and the NTK are evaluated.
        k: bottleneck rank used for ``s_{k+1}``, the bound and the layer range; ``None``
            estimates it (:func:`bnstruct.conventions.bottleneck_rank`).
            ``0 <= k <= min(sizes)``.
        Y, lam: targets ``[N, d_out]`` and the penalty weight on :math:`\|\theta\|^2`; give
            both to get ``fit`` and ``objective``; required for ``hessian=True``.
        ntk: compute ``ntk_trace_per_NL`` and ``ntk_max_eig_per_NL`` (Lanczos). With
            ``ntk=False`` analyze is deterministic and costs one forward pass, one Jacobian
            sweep and the SVDs.
        hessian: compute the top Hessian eigenvalue of
            :math:`\frac1N\sum\|f(x_i)-y_i\|^2 + \lambda\|\theta\|^2` (slower).
        lr: learning rate, only to report ``two_over_lr`` next to the Hessian figure.
        dtype: compute dtype of every measurement, the representations included (the
            numerical rank of representations uses ``eps`` of the model's dtype).
        implementation: Jacobian/NTK path, ``"auto"`` | ``"structured"`` | ``"autodiff"``
            (:class:`~bnstruct.diagnostics.Evaluation`); the one used is
            ``summary["implementation"]``.
        output: for a model returning a tuple/dict: the index/key (or a callable) of the
            tensor to analyze.
        layers: module names whose outputs are the representations (default: every
            activation module and every block, then ``f(x)``; chains: their layers).
        conv_operator: also the singular values of every stride-1 convolution as a circular
            operator on its input grid (``Analysis.operator_spectra``).
        jacobian_points: general models: points for the input-to-layer Jacobian ranks.

    Any other model than a chain (or ``output``/``layers`` given) is analyzed through
    ``torch.func`` with the model in eval mode (its flags restored): ``layers`` is then one
    row per weight layer (Linear, Conv1d/2d; kernels as ``out x (in/groups * k)``) with the
    theory columns (:data:`THEORY_COLUMNS`) null, ``representations`` one row per
    representation point (:data:`REP_COLUMNS`: the flattened and the per-channel view of
    feature maps, the input-to-layer Jacobian rank), ``summary["theory"]`` says why, the
    bottleneck rank is the same definition as for chains (read from its Linear/Conv weight
    spectra), and the bound's keys are ``None``.

    ``summary`` keys: ``depth``, ``n_points``, ``sizes``, ``implementation``,
    ``param_norm2``, ``param_norm2_per_depth``, ``bottleneck_rank``,
    ``bottleneck_rank_method``, ``k``, ``k_source``, ``bottleneck_layers`` (``[first, last]``
    or ``None``), ``bottleneck_length``, ``jacobian_rank`` (max over points) and
    ``jacobian_rank_min``, ``log_pdet2_{min,median,max}`` (:math:`2\log|Jf(x)|_k`),
    ``bound_c1``, ``bound_lhs``, ``bound_slack_min`` (worst slack) and
    ``bound_slack_median``, ``balancedness_max``, ``ntk_trace_per_NL``
    (:math:`\sum_i \mathrm{tr}\,\Theta(x_i,x_i) / (NL)`), ``ntk_max_eig``,
    ``ntk_max_eig_per_NL``, ``pca_layer``, and when asked ``fit``, ``objective``,
    ``hessian_max_eig`` and the ``hvp_method`` that computed it, ``two_over_lr``;
    ``thresholds``, ``conventions``. ``Analysis.bound`` holds the per-point bound table.
    A :class:`~bnstruct.LeakyResNet` gets its own table (:func:`leaky_analysis`: the Cost of
    Identity, the energies and the Hamiltonian per layer; ``ntk``, ``hessian`` and
    ``implementation`` do not apply to it).
    For a chain with ``Y`` and ``lam`` also ``rel_fit``, ``rel_grad``, ``rescaling_grad``
    and ``warning``: ``None``, or why the net is not yet near a stationary point of its
    objective and its numbers should not be trusted
    (:func:`~bnstruct.diagnostics.stationarity`).
    """
    from ..models.leaky import LeakyResNet

    if type(model) is LeakyResNet and output is None and layers is None:
        return leaky_analysis(model, X, k, Y=Y, lam=lam)
    ev = Evaluation(model, X, dtype=dtype, implementation=implementation, output=output,
                    layers=layers)
    return analyze_evaluation(ev, k, Y=Y, lam=lam, ntk=ntk, hessian=hessian, lr=lr,
                              conv_operator=conv_operator, jacobian_points=jacobian_points)


def leaky_analysis(model: nn.Module, X: torch.Tensor, k: int | None = None, *,
                   Y: torch.Tensor | None = None, lam: float | None = None,
                   gamma0: float = conventions.COI_GAMMA0) -> Analysis:
    r""":func:`analyze` of a :class:`~bnstruct.LeakyResNet` (float64): ``layers`` is
    :func:`~bnstruct.diagnostics.leaky_table` (one row per leaky layer, columns
    :data:`~bnstruct.diagnostics.LEAKY_COLUMNS`, plus ``in_bottleneck``:
    ``rep_energy_rank <= k``), ``weight_spectra`` those of the relu parts ``W_l[:, :w]``,
    ``rep_spectra`` of the centered :math:`A_\ell`, ``pca`` the points in the top two
    principal directions of the representation of least COI.

    ``summary``: ``model``, ``depth``, ``width``, ``n_points``, ``implementation``
    (``"leaky-resnet"``), ``coi_gamma0``, ``param_norm2`` (every parameter, biases
    included), ``penalty_norm2`` (:math:`\sum_q c_q\|\theta_q\|^2`, the paper's
    weighting), the keys of :func:`~bnstruct.diagnostics.leaky_summary`
    (``hamiltonian_spread``, ``coi_min``, ``bottleneck_rank``, ...), ``k``, ``k_source``,
    ``bottleneck_layers`` / ``bottleneck_length`` (the longest run of layers with
    ``rep_energy_rank <= k``), ``pca_layer``; with ``Y`` and ``lam``: ``fit``, ``rel_fit``
    and ``objective`` (the paper's), and the momentum-form columns."""
    from ..models.leaky import LeakyResNet
    from ._leaky import leaky_summary, leaky_table

    if not isinstance(model, LeakyResNet):
        raise ConfigError("leaky_analysis needs a bnstruct.LeakyResNet")
    if lam is not None and not (isinstance(lam, int | float) and lam >= 0):
        raise ConfigError(f"lam must be a number >= 0, got {lam!r}")
    table, ws, rs = leaky_table(model, X, Y=Y, lam=lam, gamma0=gamma0)
    s0 = leaky_summary(table, ws, model.leak)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int)
                          or not 0 <= k <= model.width):
        raise ConfigError(f"k must be an integer with 0 <= k <= width = {model.width}, "
                          f"got {k!r}")
    k_used = int(s0["bottleneck_rank"]) if k is None else k
    table["in_bottleneck"] = table["rep_energy_rank"] <= k_used
    run = longest_run([bool(f) for f in table["in_bottleneck"]])
    X64 = torch.as_tensor(X).detach().to("cpu", torch.float64)
    with torch.no_grad():
        n2 = float(sum(p.detach().double().pow(2).sum() for p in model.parameters()))
        pen = float(model.penalty_norm2().detach().double())
    s: dict[str, Any] = {"model": "LeakyResNet", "depth": model.depth, "width": model.width,
                         "n_points": int(X64.shape[0]), "implementation": "leaky-resnet",
                         "coi_gamma0": gamma0, "param_norm2": n2, "penalty_norm2": pen,
                         **s0, "k": k_used, "k_source": "given" if k is not None else
                         "estimated",
                         "bottleneck_layers": None if run is None else [run[0], run[1]],
                         "bottleneck_length": 0 if run is None else run[1] - run[0] + 1}
    if Y is not None and lam is not None:
        from ..experiments._records import float64_copy

        m = float64_copy(model)
        with torch.no_grad():
            Y64 = torch.as_tensor(Y).detach().to("cpu", torch.float64)
            fit = float((m(X64) - Y64).pow(2).sum(1).mean())
            y2 = float(Y64.pow(2).sum(1).mean())
        s.update({"fit": fit, "rel_fit": fit / y2 if y2 > 0 else math.nan,
                  "objective": fit + float(lam) * pen})
    pl = int(np.argmin(table["coi"].to_numpy(float))) + 1
    s["pca_layer"] = pl
    with torch.no_grad():
        from ..experiments._records import float64_copy

        A = float64_copy(model).representations(X64)[pl]  # type: ignore[operator]
        C = conventions.center(A)
        Vh = torch.linalg.svd(C, full_matrices=False).Vh
        coords = (C @ Vh[:2].T).numpy()
    if coords.shape[1] < 2:
        coords = np.concatenate([coords, np.zeros((coords.shape[0], 2 - coords.shape[1]))], 1)
    s["thresholds"] = {**THRESHOLDS, "energy_tol": conventions.ENERGY_TOL}
    s["conventions"] = {**conventions.summary(), "coi_gamma0": gamma0,
                        "layer": "layer l is the step A_{l-1} -> A_l; representation "
                                 "columns are of A_l, energies of the step at its input"}
    return Analysis(table, s, ws, rs, coords)  # type: ignore[arg-type]
