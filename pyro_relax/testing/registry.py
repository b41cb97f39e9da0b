"""The registry of layer factories that every generic check runs on.

Add a :class:`LayerCase` to the ``CASES`` list of a ``cases_*.py`` module and
the layer gets every check in :mod:`pyro_relax.testing.checks` (the tests in
``tests/test_layers_generic.py`` are parametrized over :data:`REGISTRY`).
:class:`LayerCase` and :func:`normal_data` live in :mod:`pyro_relax.testing.case`
(the cases import them from there) and are re-exported here.
"""

from __future__ import annotations

__all__ = ["REGISTRY", "LayerCase", "get_case", "normal_data"]

# LayerCase is bound before the cases load: cases_snf still imports it from here.
from pyro_relax.testing.case import LayerCase, normal_data

# isort: split
from pyro_relax.testing import (
    cases_bijections,
    cases_core,
    cases_generative,
    cases_snf,
    cases_stochastic,
    cases_surjections,
)


def _collect() -> list[LayerCase]:
    cases: list[LayerCase] = []
    modules = (
        cases_core,
        cases_bijections,
        cases_surjections,
        cases_generative,
        cases_stochastic,
        cases_snf,
    )
    for module in modules:
        cases.extend(module.CASES)
    names = [c.name for c in cases]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuntimeError(f"duplicate layer case names in the registry: {sorted(dupes)}")
    return cases


REGISTRY: list[LayerCase] = _collect()


def get_case(name: str) -> LayerCase:
    """The registered case called ``name``.

    Example:
        >>> get_case("abs_fair").name
        'abs_fair'
    """
    for case in REGISTRY:
        if case.name == name:
            return case
    raise ValueError(f"no layer case {name!r}; known: {[c.name for c in REGISTRY]}")
