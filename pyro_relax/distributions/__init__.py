"""The flow distribution that stacks bijections, surjections and stochastic layers."""

from pyro_relax.distributions.adapter import TransformLayer, as_layer
from pyro_relax.distributions.flow import Flow, FlowDistribution

__all__ = ["Flow", "FlowDistribution", "TransformLayer", "as_layer"]
