"""Surjective and stochastic layers (SurVAE Flows) and their base class.

Inference surjections (exact): :class:`AbsSurjection`, :class:`SortSurjection`,
:class:`MaxSurjection`, :class:`MaxPool2dSurjection`, :class:`SliceSurjection`.
Generative surjections (bounds): :class:`AugmentSurjection`,
:class:`UniformDequantization`, :class:`VariationalDequantization`,
:class:`GenerativeAbs`, :class:`GenerativeSort`. Stochastic:
:class:`StochasticPermutation` (and :class:`pyro_relax.stochastic.VAELayer`).
"""

from pyro_relax.core import RelaxedLayer
from pyro_relax.surjections.abs import AbsSurjection
from pyro_relax.surjections.augment import AugmentSurjection
from pyro_relax.surjections.dequantization import UniformDequantization, VariationalDequantization
from pyro_relax.surjections.generative_abs import GenerativeAbs
from pyro_relax.surjections.generative_sort import GenerativeSort
from pyro_relax.surjections.max import MaxSurjection
from pyro_relax.surjections.maxpool import MaxPool2dSurjection
from pyro_relax.surjections.permutation import StochasticPermutation
from pyro_relax.surjections.slice import SliceSurjection
from pyro_relax.surjections.sort import SortSurjection

__all__ = [
    "AbsSurjection",
    "AugmentSurjection",
    "GenerativeAbs",
    "GenerativeSort",
    "MaxPool2dSurjection",
    "MaxSurjection",
    "RelaxedLayer",
    "SliceSurjection",
    "SortSurjection",
    "StochasticPermutation",
    "UniformDequantization",
    "VariationalDequantization",
]
