r"""A Pyro guide trained by FAB: a flow autoguide for multimodal posteriors.

Reverse-KL variational inference (and often NUTS) settles in one mode of a
multimodal posterior. FAB (:class:`~pyro_relax.train.fab.FABTrainer`) trains
the flow on the mass-covering alpha = 2 divergence with AIS towards
``p^2 / q``, where ``p`` is the model's unnormalized posterior in the
unconstrained space (minus the potential energy,
:meth:`~pyro_relax.infer.guides.potential.PotentialMixin.log_joint_unconstrained`).
The result is an ordinary :class:`~pyro_relax.infer.guides.AutoFlowGuide`:
``guide.importance_weights(n)`` and the other guide methods work as usual.
"""

from __future__ import annotations

__all__ = ["fit_fab_guide"]

import time
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer.autoguide.initialization import init_to_median

from pyro_relax.infer.guides.base import check_dtype
from pyro_relax.infer.guides.flow import AutoFlowGuide
from pyro_relax.infer.guides.layout import check_continuous_model
from pyro_relax.train.fab import FABTrainer


def fit_fab_guide(
    model: Callable[[], Any],
    steps: int = 500,
    *,
    batch_size: int = 128,
    levels: int = 3,
    kernel: str = "hmc",
    n_leapfrog: int = 5,
    buffer: bool = True,
    num_layers: int = 4,
    hidden: int = 32,
    init_scale: float = 3.0,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    dtype: str | torch.dtype = "float64",
    **trainer_kwargs: Any,  # noqa: ANN401 - FABTrainer options
) -> tuple[AutoFlowGuide, dict[str, Any]]:
    """Build an affine-coupling :class:`AutoFlowGuide` for ``model`` and train its flow by FAB.

    Arguments:
        model: a zero-argument Pyro model with continuous latent sites.
        steps: FAB iterations (AIS batches).
        batch_size: AIS chains per iteration.
        levels: annealing blocks of the AIS (``levels - 1`` intermediate distributions).
        kernel: ``"hmc"`` or ``"metropolis"``.
        n_leapfrog: leapfrog steps per HMC step.
        buffer: use FAB's prioritized replay buffer.
        num_layers: affine coupling layers of the flow.
        hidden: their conditioners' width.
        init_scale: the starting flow's scale around the model's median point
            (wide enough to reach every mode).
        lr: Adam's learning rate.
        seed: the random seed (Pyro's and torch's).
        progress: show a progress bar.
        dtype: ``"float64"`` (default) or ``"float32"``, the dtype of the fit.
        **trainer_kwargs: further :class:`~pyro_relax.train.fab.FABTrainer` options
            (``buffer_size``, ``updates_per_ais``, ``checkpoint``, ...).

    Returns:
        ``(guide, stats)``: the trained guide and a dict with ``history``,
        ``target_evals``, ``rejected`` (AIS chains dropped), ``skipped_steps``,
        ``seconds`` and ``trainer`` (the :class:`FABTrainer`, for
        :meth:`~pyro_relax.train.fab.FABTrainer.annealed_sampler`).

    Raises:
        ValueError: for bad options or a model with discrete or no latent sites.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> guide, stats = fit_fab_guide(model, steps=2, batch_size=16, progress=False,
        ...                              min_buffer_size=16)
        >>> samples, log_w = guide.importance_weights(10)
        >>> samples["x"].shape, log_w.shape
        (torch.Size([10]), torch.Size([10]))
    """
    owner = "fit_fab_guide"
    run_dtype = check_dtype(dtype, owner)
    check_continuous_model(model)
    pyro.set_rng_seed(seed)
    with pyro.get_param_store().scope():  # the user's pyro.param values are left alone
        guide = AutoFlowGuide(
            model, kind="affine", num_layers=num_layers, hidden=hidden, init_scale=init_scale,
            init_loc_fn=init_to_median, dtype=run_dtype,
        )
        guide()  # trace the model: latent_dim and the flow exist from here on

        trainer = FABTrainer(
            guide.flow,
            guide.log_joint,  # unchecked: AIS proposals may leave the finite range (rejected)
            steps,
            batch_size=batch_size,
            levels=levels,
            kernel=kernel,
            n_leapfrog=n_leapfrog,
            buffer=buffer,
            lr=lr,
            seed=seed,
            progress=progress,
            **trainer_kwargs,
        )
        start = time.perf_counter()
        history = trainer.run()
        seconds = time.perf_counter() - start
    stats = {
        "history": history,
        "target_evals": trainer.target_evals,
        "rejected": int(sum(history["rejected"])),
        "skipped_steps": trainer.skipped_steps,
        "seconds": seconds,
        "trainer": trainer,
    }
    return guide, stats
