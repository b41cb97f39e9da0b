"""Autoguides for any Pyro model: flows with surjections, stochastic flows, diffusions."""

from pyro_relax.infer.guides.flow import AutoFlowGuide, LocScaleTransform

__all__ = ["AutoFlowGuide", "LocScaleTransform"]
