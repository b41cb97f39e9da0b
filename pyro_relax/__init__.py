"""pyro-relax: relaxations of normalizing flows (surjections, stochastic layers,
diffusions) for Pyro."""

from pyro_relax.core.switch import validation, validation_enabled

__version__ = "0.1.0"

__all__ = ["__version__", "validation", "validation_enabled"]
