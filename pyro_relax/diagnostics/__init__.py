"""Diagnostics as pure functions: ArviZ conversion, ESS, R-hat, PSIS Pareto k-hat.

Built only on what ArviZ 0.2x (``InferenceData``) and ArviZ 1.x (``DataTree``)
share; ArviZ and matplotlib are imported lazily, on first use.
"""

from pyro_relax.diagnostics.convert import from_mcmc, to_inference_data
from pyro_relax.diagnostics.modes import (
    forward_kl,
    mode_coverage,
    nearest_mode,
    weighted_summary,
    well_sides,
)
from pyro_relax.diagnostics.plots import plot_elbo, plot_khat, plot_pairs
from pyro_relax.diagnostics.psis import (
    MIN_IS_DRAWS,
    MIN_PSIS_DRAWS,
    importance_ess,
    importance_ess_fraction,
    khat_verdict,
    psis_expectation,
    psis_khat,
)
from pyro_relax.diagnostics.report import write_report
from pyro_relax.diagnostics.resample import corrected_inference_data, psis_resample
from pyro_relax.diagnostics.summary import SUMMARY_COLUMNS, summarize, weighted_report

__all__ = [
    "MIN_IS_DRAWS",
    "MIN_PSIS_DRAWS",
    "SUMMARY_COLUMNS",
    "corrected_inference_data",
    "forward_kl",
    "from_mcmc",
    "importance_ess",
    "importance_ess_fraction",
    "khat_verdict",
    "mode_coverage",
    "nearest_mode",
    "plot_elbo",
    "plot_khat",
    "plot_pairs",
    "psis_expectation",
    "psis_khat",
    "psis_resample",
    "summarize",
    "to_inference_data",
    "weighted_report",
    "weighted_summary",
    "well_sides",
    "write_report",
]
