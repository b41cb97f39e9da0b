"""The flow distribution that stacks bijections, surjections and stochastic layers.

:func:`as_layer` turns a Pyro transform into a layer; :func:`as_transform`
turns a bijective or exact layer into a Pyro transform.
"""

from pyro_relax.distributions.adapter import TransformLayer, as_layer
from pyro_relax.distributions.flow import Flow, FlowDistribution
from pyro_relax.distributions.transform import LayerTransform, as_transform

__all__ = [
    "Flow",
    "FlowDistribution",
    "LayerTransform",
    "TransformLayer",
    "as_layer",
    "as_transform",
]
