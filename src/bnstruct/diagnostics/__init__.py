"""Layer-by-layer diagnostics of a network (docs/theory.md, sections 4-6), one module per
measurement.

Any ``nn.Module`` whose forward is a function of a batch ``X`` is accepted. The structure is
found by tracing (:func:`bnstruct.models.linear_chain`, ``torch.fx``): a model whose graph is
a positively homogeneous chain of Linear/ReLU/LeakyReLU/Identity/Dropout (an MLP, bare or in
any wrapper) takes the structured fast path (:class:`ChainEvaluation`) and gets the theory's
columns; every other model is measured through ``torch.func`` (:class:`ModuleEvaluation`,
:mod:`._general`, :mod:`._autodiff`), its theory-only columns null with the reason in the
summary.

Every measurement, the representations included, is computed in float64 by default
(``dtype`` argument) from the model cast once to it; one :class:`Evaluation` holds the
forward pass, the Jacobian and the SVDs, and the public functions are thin views of it. The
bottleneck rank is :func:`bnstruct.conventions.bottleneck_rank` (one definition). The
tests check each against the brute-force ``torch.func`` references of
:mod:`bnstruct.diagnostics.reference` (never imported by production code).
"""

from ._analyze import (
    LAYER_COLUMNS,
    REP_COLUMNS,
    THEORY_COLUMNS,
    THRESHOLDS,
    Analysis,
    Summary,
    analyze,
    analyze_evaluation,
    leaky_analysis,
)
from ._bounds import bottleneck_bound
from ._chain_evaluation import ChainEvaluation
from ._evaluation import HVP_METHODS, IMPLEMENTATIONS, Evaluation
from ._hessian import hessian_max_eig
from ._jacobian import jacobian, log_pdet
from ._leaky import (
    LEAKY_COLUMNS,
    cost_of_identity,
    cost_of_identity_lower,
    leaky_summary,
    leaky_table,
    nonneg_gap,
)
from ._module_evaluation import ModuleEvaluation
from ._ntk import ntk, ntk_max_eig
from ._plots import plot_analysis
from ._producers import PRODUCERS
from ._representations import representations
from ._spectra import effective_rank, weight_spectra
from ._stationarity import BALANCE_WARN, FIT_WARN, Stationarity, stationarity

__all__ = [
    # measurements
    "weight_spectra", "effective_rank", "representations", "jacobian", "log_pdet", "ntk",
    "ntk_max_eig", "hessian_max_eig", "bottleneck_bound",
    # when not to trust them: distance from a stationary point of the objective
    "stationarity", "Stationarity", "BALANCE_WARN", "FIT_WARN",
    # one cached evaluation (two implementations), and the tables built from it
    "Evaluation", "ChainEvaluation", "ModuleEvaluation", "IMPLEMENTATIONS", "HVP_METHODS",
    "analyze", "analyze_evaluation", "Analysis", "Summary", "PRODUCERS", "LAYER_COLUMNS",
    "REP_COLUMNS", "THEORY_COLUMNS", "THRESHOLDS",
    "plot_analysis",
    # leaky ResNets: the Cost of Identity and the Hamiltonian along depth
    "cost_of_identity", "cost_of_identity_lower", "nonneg_gap", "leaky_table",
    "leaky_summary", "leaky_analysis", "LEAKY_COLUMNS",
]
