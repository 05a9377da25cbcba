"""Layer-by-layer diagnostics of a network (THEORY sections 3-4), one module per measurement.

Every measurement, the representations included, is computed in float64 by default
(``dtype`` argument) from the model cast once to it; one :class:`Evaluation` holds the
forward pass, the Jacobian and the SVDs, and the public functions are thin views of it. The
tests check each against the brute-force ``torch.func`` references of
:mod:`bnstruct.diagnostics.reference` (never imported by production code).
"""

from ._analyze import LAYER_COLUMNS, THRESHOLDS, Analysis, analyze
from ._bottleneck import BOTTLENECK_RANK_METHODS, estimate_bottleneck_rank
from ._bounds import bottleneck_bound
from ._evaluation import IMPLEMENTATIONS, Evaluation
from ._hessian import hessian_max_eig
from ._jacobian import jacobian, log_pdet
from ._ntk import ntk, ntk_max_eig
from ._plots import plot_analysis
from ._representations import representations
from ._spectra import effective_rank, weight_spectra

__all__ = [
    # measurements
    "weight_spectra", "effective_rank", "representations", "jacobian", "log_pdet", "ntk",
    "ntk_max_eig", "hessian_max_eig", "bottleneck_bound",
    # the bottleneck rank
    "estimate_bottleneck_rank", "BOTTLENECK_RANK_METHODS",
    # one cached evaluation, and the table built from it
    "Evaluation", "IMPLEMENTATIONS", "analyze", "Analysis", "LAYER_COLUMNS", "THRESHOLDS",
    "plot_analysis",
]
