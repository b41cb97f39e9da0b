"""Unnormalized benchmark densities with known log normalizers and exact samplers."""

from __future__ import annotations

__all__ = [
    "TARGETS",
    "Banana",
    "DoubleWell",
    "GaussianMixture40",
    "ManyWell",
    "NealFunnel",
    "Target",
    "get_target",
]


from pyro_relax.targets.banana import Banana
from pyro_relax.targets.base import Target
from pyro_relax.targets.double_well import DoubleWell
from pyro_relax.targets.funnel import NealFunnel
from pyro_relax.targets.gmm import GaussianMixture40
from pyro_relax.targets.many_well import ManyWell

#: The registry of :func:`get_target`: name -> target class.
TARGETS: dict[str, type[Target]] = {
    "banana": Banana,
    "double_well": DoubleWell,
    "funnel": NealFunnel,
    "gmm40": GaussianMixture40,
    "many_well": ManyWell,
}


def get_target(name: str, **kwargs: object) -> Target:
    """Build a registered target by name.

    Arguments:
        name: one of ``"banana"``, ``"double_well"``, ``"funnel"``, ``"gmm40"``,
            ``"many_well"``.
        **kwargs: passed to the target's constructor.

    Returns:
        The target module (on the CPU, in the default dtype).

    Example:
        >>> target = get_target("many_well", dim=8)
        >>> target.dim
        8
    """
    if not isinstance(name, str):
        raise TypeError(f"get_target: expected a str name, got {type(name).__name__}")
    if name not in TARGETS:
        raise ValueError(f"get_target: unknown target {name!r}; valid names: {sorted(TARGETS)}")
    return TARGETS[name](**kwargs)
