"""Layer-by-layer diagnostics of a network (THEORY sections 3-4), one module per measurement.

Every measurement is computed in float64 by default (``dtype`` argument) and checked in the
tests against a brute-force ``torch.func`` reference (:mod:`bnstruct.diagnostics.reference`).
"""

from ._analyze import THRESHOLDS, Analysis, analyze
from ._bounds import bottleneck_bound
from ._hessian import hessian_max_eig
from ._jacobian import jacobian, log_pdet
from ._ntk import ntk, ntk_max_eig
from ._plots import plot_analysis
from ._representations import representations
from ._spectra import effective_rank, weight_spectra

__all__ = [
    "weight_spectra", "effective_rank", "representations", "jacobian", "log_pdet", "ntk",
    "ntk_max_eig", "hessian_max_eig", "bottleneck_bound", "analyze", "Analysis",
    "plot_analysis", "THRESHOLDS",
]
