"""pyro-relax: relaxations of normalizing flows (surjections, stochastic layers, diffusions).

The top level holds the main entry points; each is the very object of its
subpackage (``pr.AbsSurjection is pyro_relax.surjections.AbsSurjection``).
They load on first use, so ``import pyro_relax`` stays fast and imports no
torch; the subpackages (``pr.infer``, ``pr.diagnostics``, ...) load the same way.

* flows: :class:`Flow`, :class:`FlowDistribution`, :func:`as_layer` (a Pyro
  transform as a layer), :func:`as_transform` (a bijective or exact layer as a
  Pyro transform), :class:`RelaxedLayer` (the base class of every layer);
* surjections (SurVAE): abs, sort, max, max pooling, slice, augment, the
  dequantizations, the generative abs and sort, the stochastic permutation;
* bijections: :class:`ActNorm`, :class:`LULinear`, :class:`InvertibleConv1x1`,
  :func:`coupling_stack`;
* stochastic normalizing flows: :class:`StochasticNormalizingFlow` and its
  blocks, :class:`VAELayer`;
* inference: the autoguides, :func:`fit_guide`, :func:`guide_draws`,
  :func:`run_mcmc`, :func:`pathfinder` and the MCMC kernels;
* diffusion: :class:`DDPM`, :class:`ScoreModel`, :class:`DiffFlow`,
  :class:`DiffusionDistribution` and the SDEs;
* :mod:`targets` (benchmark densities), :func:`validation`, :func:`validation_enabled`.

Example:
    >>> import torch, pyro.distributions as dist
    >>> import pyro_relax as pr
    >>> flow = pr.Flow(2, [*pr.coupling_stack(2, num_layers=2, hidden=8), pr.AbsSurjection()])
    >>> flow.log_prob(torch.randn(5, 2)).shape
    torch.Size([5])
    >>> base = dist.HalfNormal(torch.ones(2)).to_event(1)
    >>> d = dist.TransformedDistribution(base, [pr.as_transform(pr.AbsSurjection())])
    >>> d.log_prob(torch.randn(5, 2)).shape
    torch.Size([5])
"""

from __future__ import annotations

import importlib

# ``typing.TYPE_CHECKING`` without importing ``typing`` (the typing spec's idiom;
# importing ``typing`` alone would slow ``import pyro_relax`` down by half).
TYPE_CHECKING = False
if TYPE_CHECKING:  # what the names are, for type checkers and the API reference
    from pyro_relax import targets
    from pyro_relax.core import RelaxedLayer, validation, validation_enabled
    from pyro_relax.diffusion import (
        DDPM,
        VESDE,
        VPSDE,
        DiffFlow,
        DiffusionDistribution,
        ScoreModel,
        SubVPSDE,
    )
    from pyro_relax.distributions import Flow, FlowDistribution, as_layer, as_transform
    from pyro_relax.infer import (
        MALA,
        AutoDiffusionGuide,
        AutoFlowGuide,
        AutoHierarchicalGuide,
        AutoSNFGuide,
        FlowIMH,
        NeuTraNUTS,
        neutra,
    )
    from pyro_relax.infer.pathfinder import pathfinder
    from pyro_relax.infer.runner import fit_guide, guide_draws, run_mcmc
    from pyro_relax.stochastic import (
        HMCBlock,
        MALABlock,
        OverdampedLangevin,
        RandomWalkMH,
        StochasticNormalizingFlow,
        UnderdampedLangevin,
        VAELayer,
    )
    from pyro_relax.surjections import (
        AbsSurjection,
        AugmentSurjection,
        GenerativeAbs,
        GenerativeSort,
        MaxPool2dSurjection,
        MaxSurjection,
        SliceSurjection,
        SortSurjection,
        StochasticPermutation,
        UniformDequantization,
        VariationalDequantization,
    )
    from pyro_relax.transforms import ActNorm, InvertibleConv1x1, LULinear, coupling_stack

__version__ = "0.1.0"

__all__ = [
    "DDPM",
    "MALA",
    "VESDE",
    "VPSDE",
    "AbsSurjection",
    "ActNorm",
    "AugmentSurjection",
    "AutoDiffusionGuide",
    "AutoFlowGuide",
    "AutoHierarchicalGuide",
    "AutoSNFGuide",
    "DiffFlow",
    "DiffusionDistribution",
    "Flow",
    "FlowDistribution",
    "FlowIMH",
    "GenerativeAbs",
    "GenerativeSort",
    "HMCBlock",
    "InvertibleConv1x1",
    "LULinear",
    "MALABlock",
    "MaxPool2dSurjection",
    "MaxSurjection",
    "NeuTraNUTS",
    "OverdampedLangevin",
    "RandomWalkMH",
    "RelaxedLayer",
    "ScoreModel",
    "SliceSurjection",
    "SortSurjection",
    "StochasticNormalizingFlow",
    "StochasticPermutation",
    "SubVPSDE",
    "UnderdampedLangevin",
    "UniformDequantization",
    "VAELayer",
    "VariationalDequantization",
    "__version__",
    "as_layer",
    "as_transform",
    "coupling_stack",
    "fit_guide",
    "guide_draws",
    "neutra",
    "pathfinder",
    "run_mcmc",
    "targets",
    "validation",
    "validation_enabled",
]

# Where each name lives: a subpackage whose ``__init__`` exports it. A tuple lists homes
# to try in order (the runs of ``infer.runner`` may also come to be exported by ``infer``).
_CORE = ("pyro_relax.core",)
_DISTRIBUTIONS = ("pyro_relax.distributions",)
_SURJECTIONS = ("pyro_relax.surjections",)
_TRANSFORMS = ("pyro_relax.transforms",)
_STOCHASTIC = ("pyro_relax.stochastic",)
_INFER = ("pyro_relax.infer",)
_RUNS = ("pyro_relax.infer", "pyro_relax.infer.runner")
_PATHFINDER = ("pyro_relax.infer.pathfinder",)
_DIFFUSION = ("pyro_relax.diffusion",)
_HOMES: dict[str, tuple[str, ...]] = {
    "DDPM": _DIFFUSION,
    "MALA": _INFER,
    "VESDE": _DIFFUSION,
    "VPSDE": _DIFFUSION,
    "AbsSurjection": _SURJECTIONS,
    "ActNorm": _TRANSFORMS,
    "AugmentSurjection": _SURJECTIONS,
    "AutoDiffusionGuide": _INFER,
    "AutoFlowGuide": _INFER,
    "AutoHierarchicalGuide": _INFER,
    "AutoSNFGuide": _INFER,
    "DiffFlow": _DIFFUSION,
    "DiffusionDistribution": _DIFFUSION,
    "Flow": _DISTRIBUTIONS,
    "FlowDistribution": _DISTRIBUTIONS,
    "FlowIMH": _INFER,
    "GenerativeAbs": _SURJECTIONS,
    "GenerativeSort": _SURJECTIONS,
    "HMCBlock": _STOCHASTIC,
    "InvertibleConv1x1": _TRANSFORMS,
    "LULinear": _TRANSFORMS,
    "MALABlock": _STOCHASTIC,
    "MaxPool2dSurjection": _SURJECTIONS,
    "MaxSurjection": _SURJECTIONS,
    "NeuTraNUTS": _INFER,
    "OverdampedLangevin": _STOCHASTIC,
    "RandomWalkMH": _STOCHASTIC,
    "RelaxedLayer": _CORE,
    "ScoreModel": _DIFFUSION,
    "SliceSurjection": _SURJECTIONS,
    "SortSurjection": _SURJECTIONS,
    "StochasticNormalizingFlow": _STOCHASTIC,
    "StochasticPermutation": _SURJECTIONS,
    "SubVPSDE": _DIFFUSION,
    "UnderdampedLangevin": _STOCHASTIC,
    "UniformDequantization": _SURJECTIONS,
    "VAELayer": _STOCHASTIC,
    "VariationalDequantization": _SURJECTIONS,
    "as_layer": _DISTRIBUTIONS,
    "as_transform": _DISTRIBUTIONS,
    "coupling_stack": _TRANSFORMS,
    "fit_guide": _RUNS,
    "guide_draws": _RUNS,
    "neutra": _INFER,
    "pathfinder": _PATHFINDER,
    "run_mcmc": _RUNS,
    "validation": _CORE,
    "validation_enabled": _CORE,
}

# Subpackages reachable as attributes without an explicit import (``pr.infer``).
_SUBPACKAGES = frozenset(
    (
        "core",
        "diagnostics",
        "diffusion",
        "distributions",
        "infer",
        "nn",
        "stochastic",
        "surjections",
        "targets",
        "testing",
        "train",
        "transforms",
    )
)


def _load(name: str) -> object:
    """Import the object called ``name`` from the first of its homes that has it."""
    for home in _HOMES[name]:
        module = importlib.import_module(home)
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'pyro_relax' cannot find {name!r} in {_HOMES[name]}")


def __getattr__(name: str) -> object:
    """Load a top-level name or subpackage on first use (PEP 562) and keep it."""
    if name in _HOMES:
        value = _load(name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"pyro_relax.{name}")
    else:
        raise AttributeError(f"module 'pyro_relax' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names (loaded or not) and the module's own globals."""
    return sorted(set(globals()) | set(__all__) | _SUBPACKAGES)
