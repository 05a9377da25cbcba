"""Layer-by-layer diagnostics of a network (docs/theory.md, sections 4-6), one module per
measurement.

Any ``nn.Module`` whose forward is a function of a batch ``X`` is accepted: chains (MLP,
DeepLinear, nested ``nn.Sequential`` of Linear/ReLU/LeakyReLU/Identity/Dropout) take the
structured fast path and get the theory's columns; every other model is measured through
``torch.func`` (:mod:`._general`, :mod:`._autodiff`), its theory-only columns null with the
reason in the summary.

Every measurement, the representations included, is computed in float64 by default
(``dtype`` argument) from the model cast once to it; one :class:`Evaluation` holds the
forward pass, the Jacobian and the SVDs, and the public functions are thin views of it. The
tests check each against the brute-force ``torch.func`` references of
:mod:`bnstruct.diagnostics.reference` (never imported by production code).
"""

from ._analyze import LAYER_COLUMNS, REP_COLUMNS, THEORY_COLUMNS, THRESHOLDS, Analysis, analyze
from ._bottleneck import (
    BOTTLENECK_RANK_METHODS,
    estimate_bottleneck_rank,
    estimate_rep_bottleneck_rank,
)
from ._bounds import bottleneck_bound
from ._evaluation import IMPLEMENTATIONS, Evaluation
from ._hessian import hessian_max_eig
from ._jacobian import jacobian, log_pdet
from ._ntk import ntk, ntk_max_eig
from ._plots import plot_analysis
from ._representations import representations
from ._spectra import effective_rank, weight_spectra
from ._stationarity import BALANCE_WARN, FIT_WARN, Stationarity, stationarity

__all__ = [
    # measurements
    "weight_spectra", "effective_rank", "representations", "jacobian", "log_pdet", "ntk",
    "ntk_max_eig", "hessian_max_eig", "bottleneck_bound",
    # when not to trust them: distance from a stationary point of the objective
    "stationarity", "Stationarity", "BALANCE_WARN", "FIT_WARN",
    # the bottleneck rank
    "estimate_bottleneck_rank", "estimate_rep_bottleneck_rank", "BOTTLENECK_RANK_METHODS",
    # one cached evaluation, and the tables built from it
    "Evaluation", "IMPLEMENTATIONS", "analyze", "Analysis", "LAYER_COLUMNS", "REP_COLUMNS",
    "THEORY_COLUMNS", "THRESHOLDS",
    "plot_analysis",
]
