"""Pyro versions of nineteen posteriordb posteriors with gold-standard reference draws.

The thirteen of issue 9 have posteriordb's reference draws; the six larger hierarchical
posteriors of issue 20 (``pilots``, ``seeds``, ``glmm1``, ``mh``, ``butterfly``,
``hierarchical_gp``) have Stan references made for pyro-relax (4 chains x 1000 draws).
Each is checked by the score identities at its reference draws
(:mod:`pyro_relax.testing.score_identity`).

Each module defines ``NAME`` (the posteriordb folder), ``LATENT_DIM`` (the
unconstrained dimension), a zero-argument Pyro ``model()``,
``to_reference_names(samples)`` and ``site_values_from_reference(draw)``.
The data are loaded at import by :mod:`pyro_relax.testing.posteriordb`.
"""

from __future__ import annotations

__all__ = ["MODELS", "load_model"]

from types import ModuleType

from . import (
    arK,
    butterfly,
    earnings,
    eight_schools_centered,
    eight_schools_noncentered,
    garch11,
    glmm1,
    gp_pois_regr,
    hierarchical_gp,
    hmm_drive,
    kidiq,
    kilpisjarvi,
    low_dim_gauss_mix,
    mesquite,
    mh,
    nes1976,
    pilots,
    sblri,
    seeds,
)

MODELS: dict[str, ModuleType] = {
    "arK": arK,
    "butterfly": butterfly,
    "earnings": earnings,
    "eight_schools_centered": eight_schools_centered,
    "eight_schools_noncentered": eight_schools_noncentered,
    "garch11": garch11,
    "glmm1": glmm1,
    "gp_pois_regr": gp_pois_regr,
    "hierarchical_gp": hierarchical_gp,
    "hmm_drive": hmm_drive,
    "kidiq": kidiq,
    "kilpisjarvi": kilpisjarvi,
    "low_dim_gauss_mix": low_dim_gauss_mix,
    "mesquite": mesquite,
    "mh": mh,
    "nes1976": nes1976,
    "pilots": pilots,
    "sblri": sblri,
    "seeds": seeds,
}


def load_model(short_name: str) -> ModuleType:
    """The module of one posterior by its short name.

    Arguments:
        short_name: a key of :data:`MODELS`, e.g. ``"eight_schools_noncentered"``.

    Returns:
        The module, with ``NAME``, ``LATENT_DIM``, ``model``,
        ``to_reference_names`` and ``site_values_from_reference``.

    Example:
        >>> load_model("kilpisjarvi").LATENT_DIM
        3
    """
    if not isinstance(short_name, str):
        raise TypeError(f"load_model: expected a str, got {type(short_name).__name__}")
    if short_name not in MODELS:
        raise ValueError(f"load_model: expected one of {sorted(MODELS)}, got {short_name!r}")
    return MODELS[short_name]
