"""Pathfinder for a zero-argument Pyro model, in its unconstrained space.

The log density is the model's :class:`~pyro_relax.infer.model.Potential`
(vectorized over rows: a particle plate, else ``torch.func.vmap``, else a
loop, said once in a warning). Torch's default dtype is never changed: the
latents are passed in ``dtype`` (see :mod:`pyro_relax.infer.model` for a
model whose float32 tensors refuse them).
"""

from __future__ import annotations

__all__ = ["pathfinder_for_model"]

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pyro_relax.core.checks import check_int
from pyro_relax.infer.model import Potential
from pyro_relax.infer.pathfinder.api import PathfinderResult, pathfinder

_NAME = "pathfinder_for_model"


def pathfinder_for_model(
    model: Callable[[], Any],
    num_paths: int = 4,
    num_draws: int = 1000,
    *,
    init: Tensor | None = None,
    init_radius: float = 2.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    **kwargs: Any,  # noqa: ANN401 - pathfinder options
) -> PathfinderResult:
    """Run :func:`~pyro_relax.infer.pathfinder.pathfinder` on a Pyro model's posterior.

    Each path starts at ``init + U(-r, r)`` in the unconstrained space (``init``
    defaults to zeros, as in Stan, ``r = init_radius``). The result's ``samples``
    hold the PSIS-resampled draws as constrained site values and ``constrain`` maps
    any unconstrained draws ``(n, d)`` (e.g. from ``result.draw(n)``) the same way.

    Arguments:
        model: a Pyro model taking no arguments, with continuous latent sites, or its
            :class:`~pyro_relax.infer.model.Potential`.
        num_paths: the number of paths (``>= 1``).
        num_draws: the number of draws (see :func:`pathfinder`).
        init: an unconstrained initial point ``(d,)`` or one per path ``(num_paths, d)``.
        init_radius: the jitter of a ``(d,)`` init.
        dtype: the dtype of the latents passed to the model (float64; the
            computation itself is always float64).
        device: where the unconstrained draws live (``None``: the default device);
            the model must make its tensors there.
        **kwargs: further options of :func:`pathfinder` (``max_iters``, ``hessian``,
            ``generator``, ...).

    Returns:
        A :class:`PathfinderResult` with ``samples`` and ``constrain`` set.

    Raises:
        TypeError: when ``model`` is not callable or ``dtype`` is not floating.
        ValueError: on a model without latent sites, a bad argument, or when no path
            starts at a finite point.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> def model():
        ...     s = pyro.sample("s", dist.LogNormal(0.0, 0.5))
        ...     pyro.sample("x", dist.Normal(0.0, s), obs=torch.tensor(0.3))
        >>> g = torch.Generator().manual_seed(0)
        >>> fit = pathfinder_for_model(model, num_paths=2, num_draws=100, generator=g)
        >>> fit.samples["s"].shape, bool((fit.samples["s"] > 0).all())
        (torch.Size([100]), True)
    """
    if not callable(model) and not isinstance(model, Potential):
        raise TypeError(f"{_NAME}: expected a callable Pyro model, got {type(model).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{_NAME}: expected a floating torch.dtype, got {dtype!r}")
    num_paths = check_int(num_paths, "num_paths", _NAME, 1)
    dev = torch.get_default_device() if device is None else torch.device(device)
    potential = model if isinstance(model, Potential) else Potential(model, dtype=dtype)
    d = potential.latent_dim
    if d < 1:
        raise ValueError(f"{_NAME}: expected a model with continuous latent sites, got none")

    def log_p(z: Tensor) -> Tensor:
        return potential.log_density(z.to(device=dev, dtype=dtype)).to(torch.float64)

    def constrain(z: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return potential.constrain(z.to(device=dev, dtype=dtype))

    # Two rows, so that a model that cannot take a particle plate is found (and looped
    # over, with a warning) before the paths' one-row gradient calls.
    with torch.no_grad():
        log_p(torch.linspace(-0.5, 0.5, 2 * d, dtype=torch.float64, device=dev).reshape(2, d))
    if init is None:
        init = torch.zeros(d, dtype=torch.float64, device=dev)
    elif not isinstance(init, Tensor) or init.shape[-1:] != (d,):
        shape = tuple(init.shape) if isinstance(init, Tensor) else type(init).__name__
        raise ValueError(f"{_NAME}: expected an init of shape (d,) or (num_paths, d) with "
                         f"d={d}, got {shape}")
    result = pathfinder(log_p, init.to(dev), num_paths, num_draws, init_radius=init_radius,
                        **kwargs)
    result.constrain = constrain
    result.samples = constrain(result.draws)
    return result
