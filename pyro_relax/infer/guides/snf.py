r"""``AutoSNFGuide``: a stochastic normalizing flow over the unconstrained latent vector.

A flow (as in :class:`~pyro_relax.infer.guides.flow.AutoFlowGuide`) followed by
Langevin / Metropolis / HMC blocks (:mod:`pyro_relax.stochastic`) whose target
is the model's unnormalized posterior in unconstrained space,

.. math::
    \log \pi(z) = \log p(x, T(z)) + \log|\det \partial T / \partial z|,

computed by :meth:`~pyro_relax.infer.guides.base.RelaxedGuideMixin.log_joint_unconstrained`
(the model conditioned on the constrained values, vectorized over the
particles; no call to ``initialize_model``, whose potential function takes
one unbatched dict at a time). Each block adds its path weight
``Delta S = log q_back - log q_fwd`` to the flow's log-det, and the guide hands
``log q_hat = log q_0 - sum S`` to ``Trace_ELBO`` through a Delta site (see
:mod:`pyro_relax.infer.guides.base`), which makes the ELBO the SNF's
auxiliary-variable bound ``E[log w] <= log p(x)``. Langevin blocks are
reparametrized (unbiased gradients); Metropolis and HMC blocks pass
gradients through the accepted branch only, as in the SNF paper (the accept
decision itself is not differentiated, so those gradients are biased while
the bound stays valid).
"""

from __future__ import annotations

__all__ = ["BLOCKS", "AutoSNFGuide"]

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from torch import Tensor

from pyro_relax.core.checks import check_callable, check_int
from pyro_relax.core.layer import RelaxedLayer
from pyro_relax.infer.guides.base import RelaxedGuideMixin
from pyro_relax.infer.guides.flow import AutoFlowGuide, FlowStackMixin, LayerSpec, make_flow
from pyro_relax.stochastic.annealing import AnnealedBlock
from pyro_relax.stochastic.hmc import HMCBlock
from pyro_relax.stochastic.langevin import MALABlock, OverdampedLangevin
from pyro_relax.stochastic.mh import RandomWalkMH
from pyro_relax.stochastic.pullback import (
    PulledBackDensity,
    annealed_hmc_levels,
    tune_step_sizes,
)
from pyro_relax.stochastic.snf import StochasticNormalizingFlow
from pyro_relax.stochastic.underdamped import UnderdampedLangevin

BLOCKS: dict[str, type[AnnealedBlock]] = {
    "hmc": HMCBlock,
    "langevin": OverdampedLangevin,
    "mala": MALABlock,
    "mh": RandomWalkMH,
    "underdamped": UnderdampedLangevin,
}
"""Block names accepted by :class:`AutoSNFGuide` and the classes they build."""

BlockSpec = (
    Sequence[str | tuple[str, Mapping[str, Any]]]
    | Callable[[Callable[[Tensor], Tensor], int], Sequence[RelaxedLayer]]
)


def _check_blocks(blocks: object, owner: str) -> None:
    if callable(blocks):
        return
    if isinstance(blocks, str) or not isinstance(blocks, Sequence):
        raise TypeError(
            f"{owner}: expected blocks as a list of names / (name, kwargs) pairs or a callable "
            f"(target, latent_dim) -> list, got {type(blocks).__name__}"
        )
    for entry in blocks:
        if isinstance(entry, str):
            name = entry
        elif isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], Mapping):
            name = entry[0]
        else:
            raise TypeError(f"{owner}: expected a block as name or (name, kwargs), got {entry!r}")
        if name not in BLOCKS:
            raise ValueError(f"{owner}: expected a block name in {sorted(BLOCKS)}, got {name!r}")


class AutoSNFGuide(FlowStackMixin, RelaxedGuideMixin, AutoContinuous):
    r"""A stochastic-normalizing-flow autoguide: flow layers, then MCMC/Langevin blocks.

    Arguments:
        model: a Pyro model (continuous latent sites).
        layers: the deterministic part, as in
            :class:`~pyro_relax.infer.guides.flow.AutoFlowGuide` (``None``: coupling
            stack plus a loc/scale layer at the initial point; ``[]``: blocks only,
            from ``N(0, I)``).
        blocks: the stochastic part, after ``layers``: a list whose entries are a
            name from :data:`BLOCKS` or a pair ``(name, kwargs)`` (the kwargs go
            to the block's constructor; by default ``learn_step_size=True``), or a
            callable ``(target, latent_dim) -> list of layers`` for full control
            (e.g. annealed blocks, blocks interleaved with bijections). ``target``
            maps ``batch + (latent_dim,)`` to ``batch``.
        num_layers: coupling layers of the default flow part.
        hidden: conditioner width of the default flow part.
        kind: ``"spline"``, ``"affine"`` or ``"iaf"`` for the default flow part.
        init_loc_fn: per-site initialization (Pyro's ``init_to_*``).
        init_scale: initial scale of the default flow part.
        init_gaussian: ``(loc, scale_tril)`` in the unconstrained space: the default
            flow part then ends in a whitening affine layer started there.
        dtype: the dtype of the guide's parameters and latents (``None``: float64).
        placement: ``"data"`` (default): the blocks follow the flow and target the
            model's log density in unconstrained space. ``"base"``: the blocks come
            first, in the flow's base space, and target the model's density pulled
            back through the flow (:class:`~pyro_relax.stochastic.pullback.PulledBackDensity`;
            the flow part must be exact and bijective); with
            :func:`~pyro_relax.stochastic.pullback.annealed_hmc_levels` as ``blocks``
            this is annealed importance sampling from the flow (see
            :meth:`from_flow_guide`).

    References:
        Wu, Koehler and Noe. Stochastic Normalizing Flows. NeurIPS 2020 (arXiv 2002.06707).
        Hoffman et al. NeuTra-lizing Bad Geometry in HMC with Neural Transport. 2019
        (arXiv 1903.03704).

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
        >>> guide = AutoSNFGuide(model, num_layers=1, hidden=8, blocks=["mala"])
        >>> sorted(guide())
        ['s']
    """

    DEFAULT_BLOCKS: tuple[str, ...] = ("langevin", "langevin")
    """The blocks of the constructor (and of :meth:`warm_start`) when none are given."""

    WARM_FLOW: Mapping[str, Any] = {"kind": "affine", "num_layers": 2}
    """The flow guide :meth:`warm_start` fits first, unless its options say otherwise."""

    FLOW_OPTIONS: tuple[str, ...] = (
        "num_layers", "hidden", "kind", "init_loc_fn", "init_scale", "init_gaussian", "dtype",
    )
    """The options of :meth:`warm_start` that go to its flow guide (the rest to the SNF)."""

    def __init__(
        self,
        model: Callable[..., Any],
        layers: LayerSpec = None,
        *,
        blocks: BlockSpec = DEFAULT_BLOCKS,
        num_layers: int = 2,
        hidden: int = 64,
        kind: str = "affine",
        init_loc_fn: Callable[[dict], Tensor] = init_to_median,
        init_scale: float = 0.1,
        placement: str = "data",
        init_gaussian: tuple[Tensor, Tensor] | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        owner = type(self).__name__
        self._set_stack(model, layers, num_layers, hidden, kind, init_scale)
        _check_blocks(blocks, owner)
        if placement not in ("data", "base"):
            raise ValueError(f"{owner}: expected placement 'data' or 'base', got {placement!r}")
        self._placement = placement
        self._block_spec = blocks
        super().__init__(model, init_loc_fn=init_loc_fn)
        self._init_relaxed(model, init_gaussian, dtype)

    def target_log_density(self, z: Tensor) -> Tensor:
        """The blocks' target: ``log_joint_unconstrained`` with the last model arguments."""
        return self._log_joint(z, *self.model_args)

    def _make_blocks(self, target: Callable[[Tensor], Tensor]) -> list[RelaxedLayer]:
        spec = self._block_spec
        if callable(spec):
            return list(spec(target, self.latent_dim))
        out: list[RelaxedLayer] = []
        for entry in spec:
            name, kwargs = (entry, {}) if isinstance(entry, str) else entry
            options = {"learn_step_size": True, **dict(kwargs)}
            out.append(BLOCKS[name](target, **options))
        return out

    def _build(self, init_loc: Tensor) -> None:
        layers = self._stack(init_loc)
        if self._placement == "base":
            pulled = PulledBackDensity(layers, self.target_log_density)
            layers = self._make_blocks(pulled) + layers
        else:
            layers = layers + self._make_blocks(self.target_log_density)
        snf = make_flow(
            layers,
            self.latent_dim,
            type(self).__name__,
            cls=StochasticNormalizingFlow,
            target=self.target_log_density,
        )
        self.snf = snf.to(device=init_loc.device, dtype=init_loc.dtype)

    @property
    def blocks(self) -> list[AnnealedBlock]:
        """The stochastic blocks of the stack (after the guide has run once)."""
        if self.prototype_trace is None:
            return []
        return self.snf.blocks

    @classmethod
    def from_flow_guide(
        cls,
        guide: AutoFlowGuide,
        blocks: BlockSpec | None = None,
        *,
        levels: int = 10,
        n_leapfrog: int = 3,
        tune_rounds: int = 10,
        tune_batch: int = 256,
        **options: Any,  # noqa: ANN401 - the constructor's options
    ) -> AutoSNFGuide:
        """Annealed importance sampling from a trained flow guide (its layers shared, not copied).

        The new guide runs ``blocks`` (default: ``levels`` annealed HMC levels
        from ``N(0, I)`` to the model's posterior pulled back through the flow,
        ``n_leapfrog`` leapfrog steps each) in the flow's base space, then the
        flow. Its step sizes are tuned by a pilot of ``tune_rounds`` rounds of
        ``tune_batch`` paths (acceptance 0.7). Its path weights are exact
        importance weights; more levels cost more model evaluations
        (``levels * (n_leapfrog + 1)`` per draw) and give better weights.

        Arguments:
            guide: a trained :class:`~pyro_relax.infer.guides.flow.AutoFlowGuide`
                with an exact bijective stack, run at least once.
            blocks: a block spec as in the constructor, or ``None`` for the
                annealed HMC levels.
            levels: annealing levels of the default blocks.
            n_leapfrog: leapfrog steps of the default blocks.
            tune_rounds: pilot rounds (0: no tuning).
            tune_batch: paths per pilot round.
            **options: further constructor options (``placement`` defaults to
                ``"base"`` here; ``init_loc_fn`` only seeds the prototype trace).

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> def model():
            ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
            >>> flow = AutoFlowGuide(model, num_layers=1, hidden=8)
            >>> _ = flow()
            >>> ais = AutoSNFGuide.from_flow_guide(flow, levels=2, tune_rounds=1, tune_batch=8)
            >>> ais.sample_unconstrained(4)[0].shape
            torch.Size([4, 1])
        """
        owner = f"{cls.__name__}.from_flow_guide"
        if not isinstance(guide, AutoFlowGuide):
            raise TypeError(f"{owner}: expected an AutoFlowGuide, got {type(guide).__name__}")
        if guide.prototype_trace is None:
            raise RuntimeError(f"{owner}: run the flow guide once (or train it) first")
        tune_rounds = check_int(tune_rounds, "tune_rounds", owner, 0)
        dtype, device = guide.flow.dtype, guide.flow.device
        if blocks is None:
            levels = check_int(levels, "levels", owner, 1)

            def annealed(target: Callable[[Tensor], Tensor], dim: int) -> list[RelaxedLayer]:
                made = annealed_hmc_levels(target, levels=levels, n_leapfrog=n_leapfrog)
                return [b.to(device=device, dtype=dtype) for b in made]

            blocks = annealed
        args, kwargs = guide.model_args
        # The layers are given, so the initial point only seeds the prototype trace.
        # built in the flow guide's dtype: the layers are shared, so building in another
        # dtype would convert the flow guide's own layers
        new = cls(guide.raw_model, list(guide.flow.layers), blocks=blocks,
                  **{"placement": "base", **options, "dtype": dtype})
        new.setup(*args, **kwargs)
        if tune_rounds:
            new.tune_step_sizes(rounds=tune_rounds, batch_size=tune_batch)
        return new

    @classmethod
    def warm_start(
        cls,
        model: Callable[..., Any],
        train_flow: Callable[[AutoFlowGuide], object],
        **options: Any,  # noqa: ANN401 - the constructor's options
    ) -> AutoSNFGuide:
        """An SNF whose flow part was fitted alone first (a warm start), then shared.

        Training an SNF from scratch lets the blocks fight an untrained flow. A
        warm start first builds an :class:`~pyro_relax.infer.guides.flow.AutoFlowGuide`
        (:attr:`WARM_FLOW`: two affine couplings, unless the options among
        :attr:`FLOW_OPTIONS` say otherwise) and hands it to ``train_flow``, which
        trains it (e.g. SVI for half the steps). The SNF then shares the trained
        layers and puts its blocks (default :attr:`DEFAULT_BLOCKS`) in the flow's
        base space (``placement="base"`` unless given): there the posterior has
        scale about 1 in every direction, so one step size fits all blocks (not
        so in the model's space). Train the returned guide for the rest.

        Arguments:
            model: a Pyro model (continuous latent sites).
            train_flow: trains the flow guide in place (its return value is ignored).
            **options: constructor options of both parts (see :attr:`FLOW_OPTIONS`).

        Returns:
            The SNF guide, set up (in the flow guide's dtype), untrained blocks.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> from pyro.infer import SVI, Trace_ELBO
            >>> def model():
            ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
            >>> def train(flow):
            ...     svi = SVI(model, flow, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
            ...     for _ in range(5):
            ...         svi.step()
            >>> snf = AutoSNFGuide.warm_start(model, train, hidden=8)
            >>> len(snf.blocks), snf.sample_unconstrained(3)[0].shape
            (2, torch.Size([3, 1]))
        """
        check_callable(train_flow, "train_flow", f"{cls.__name__}.warm_start")
        flow_options = {k: v for k, v in options.items() if k in cls.FLOW_OPTIONS}
        flow = AutoFlowGuide(model, **{**cls.WARM_FLOW, **flow_options})
        train_flow(flow)
        if flow.prototype_trace is None:
            flow()
        rest = {k: v for k, v in options.items() if k not in cls.FLOW_OPTIONS}
        blocks = rest.pop("blocks", cls.DEFAULT_BLOCKS)
        rest.pop("dtype", None)  # the SNF takes the trained flow's dtype
        if "init_loc_fn" in flow_options:
            rest["init_loc_fn"] = flow_options["init_loc_fn"]
        return cls.from_flow_guide(flow, blocks, tune_rounds=0, **rest)

    def tune_step_sizes(
        self, rounds: int = 10, batch_size: int = 256, target_accept: float = 0.7
    ) -> list[float]:
        """Tune the Metropolis-adjusted blocks' step sizes by a pilot run; return them.

        See :func:`~pyro_relax.stochastic.pullback.tune_step_sizes`.
        """
        if self.prototype_trace is None:
            raise RuntimeError(f"{type(self).__name__}.tune_step_sizes: run the guide once first")
        return tune_step_sizes(self.snf, rounds=rounds, batch_size=batch_size,
                               target_accept=target_accept)

    def _draw(self, sample_shape: torch.Size) -> tuple[Tensor, Tensor]:
        snf = self.snf
        return snf().rsample_and_log_q(sample_shape)  # raises on a NaN step (validation on)
