"""Registry cases: stochastic layers (random permutation, VAE layer).

No case needs ``grad_exempt``: the VAE layer's ``decode`` reaches the decoder
through the reparametrized ``x`` and the encoder through ``log q(z | x)`` in ``S``;
the permutation has no parameters.
"""

from __future__ import annotations

__all__ = ["CASES"]


from pyro_relax.stochastic.vae import VAELayer
from pyro_relax.surjections.permutation import StochasticPermutation
from pyro_relax.testing.case import LayerCase, event_size

CASES: list[LayerCase] = [
    LayerCase("stochastic_permutation", lambda s: StochasticPermutation()),
    LayerCase(
        "stochastic_permutation_event2",
        lambda s: StochasticPermutation(event_dim=2),
        event_shapes=((2, 3), (3, 4)),
    ),
    LayerCase("vae_layer", lambda s: VAELayer(event_size(s), latent_dim=2, hidden=(8,))),
    LayerCase(
        "vae_layer_conditional",
        lambda s: VAELayer(event_size(s), latent_dim=event_size(s) + 1, hidden=(8,), context_dim=3),
        conditional=3,
    ),
]
