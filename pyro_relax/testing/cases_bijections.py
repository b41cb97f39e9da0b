"""Registry cases: the Glow-lineage bijections of :mod:`pyro_relax.transforms`.

They are Pyro ``TransformModule``s, so the registry wraps them in
:class:`~pyro_relax.distributions.TransformLayer` (event dims from the codomain).
Pyro's own 1x1 convolution is here too, as the reference point for ours.
"""

from __future__ import annotations

__all__ = ["CASES"]

import pyro.distributions.transforms as T

from pyro_relax.testing.case import LayerCase, event_size
from pyro_relax.transforms.actnorm import ActNorm
from pyro_relax.transforms.conv1x1 import InvertibleConv1x1
from pyro_relax.transforms.lu_linear import LULinear
from pyro_relax.transforms.rqs import RQSCoupling

_IMAGES = ((3, 4, 4), (2, 2, 2))


CASES: list[LayerCase] = [
    LayerCase("actnorm", lambda s: ActNorm(event_size(s))),
    LayerCase(
        "actnorm_image",
        lambda s: ActNorm(event_size(s), event_dim=3),
        event_shapes=((3, 4, 4),),
    ),
    LayerCase("lu_linear", lambda s: LULinear(event_size(s))),
    # bound 2: standard normal data reaches the identity tails on both sides
    LayerCase("rqs_coupling", lambda s: RQSCoupling(event_size(s), hidden=8, count_bins=5,
                                                    bound=2.0)),
    LayerCase("rqs_coupling_swap", lambda s: RQSCoupling(event_size(s), hidden=8, count_bins=5,
                                                         bound=2.0, swap=True)),
    LayerCase("conv1x1", lambda s: InvertibleConv1x1(event_size(s)), event_shapes=_IMAGES),
    LayerCase(
        "pyro_channel_permute",
        lambda s: T.GeneralizedChannelPermute(channels=event_size(s)),
        event_shapes=_IMAGES,
    ),
]
