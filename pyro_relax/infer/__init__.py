"""Training loops, autoguides and MCMC kernels."""

from pyro_relax.infer.density import count_parameters, evaluate_nll, fit_density

__all__ = ["count_parameters", "evaluate_nll", "fit_density"]
