r"""``AutoDiffusionGuide``: a controlled diffusion from a simple start to the posterior.

The guide runs an Euler-Maruyama chain in standardized coordinates ``y``,

.. math::
    y_{k+1} = a_k y_k + \delta_k + \sqrt{v_k}\, \varepsilon_k, \qquad
    \delta_k = c_k\, u_\theta(y_k, t_k), \qquad \varepsilon_k \sim N(0, I),

a *reference* chain ``R_k(y_{k+1} | y_k) = N(a_k y_k, v_k I)`` plus a learned
drift ``u_theta`` (a time-embedded MLP, zero at the start), and maps the end
point through a learnable affine layer ``z = loc + scale * y_K / s_K`` to the
unconstrained latent. Two references:

* ``"pis"`` (path integral sampler, Zhang and Chen 2022): Brownian motion
  ``dY = sigma dW`` from the point ``y_0 = 0`` over ``t in [0, 1]``:
  ``a_k = 1``, ``v_k = sigma^2 h``, ``c_k = h`` (``u`` is a drift), ``s_K = sigma``.
  Its time reversal is the Brownian bridge
  ``B_k(y_k | y_{k+1}) = N(t_k / t_{k+1} y_{k+1}, sigma^2 h t_k / t_{k+1})``.
* ``"dds"`` (denoising diffusion sampler, Vargas et al. 2023): a stationary
  Ornstein-Uhlenbeck chain from ``y_0 ~ N(0, I)``: ``a_k = sqrt(1 - alpha)``,
  ``v_k = alpha``, ``c_k = alpha`` with ``alpha = 1 - exp(-2 / K)``, ``s_K = 1``;
  it is reversible, so ``B_k(y_k | y_{k+1}) = N(a_k y_{k+1}, alpha)``.

**Path weight.** With target ``pi`` (the model's unnormalized posterior of
``y``), the forward path density ``q = q_0 prod F_k`` and the reference
backward path density ``pi(y_K) prod B_k``,

.. math::
    \log w = \log \pi(y_K) + \sum_k \log B_k(y_k | y_{k+1}) - \log q_0(y_0)
    - \sum_k \log F_k(y_{k+1} | y_k).

The reference chain factorizes both ways, ``R_0(y_0) prod R_k = R_K(y_K) prod B_k``
with ``R_K = N(0, s_K^2 I)``, and ``q_0 = R_0``, so the Gaussian transition
densities reduce to (no degenerate bridge step at ``t = 0``)

.. math::
    \log \hat q(y_K) = \log R_K(y_K) + \sum_k \Big(\frac{|\delta_k|^2}{2 v_k}
    + \frac{\delta_k \cdot \varepsilon_k}{\sqrt{v_k}}\Big),
    \qquad \log w = \log \pi(y_K) - \log \hat q(y_K),

(the affine layer adds its log-det); each step and its two transition
densities are :func:`~pyro_relax.ops.gaussian.euler_maruyama_step`. ``E[w] = Z`` for any drift, so
``Trace_ELBO`` with the Delta trick of :mod:`pyro_relax.infer.guides.base`
optimizes the valid bound ``E[log w] <= log p(x)`` (the discrete-time
version of PIS/DDS's path KL). All noise is reparametrized.
"""

from __future__ import annotations

__all__ = ["AutoDiffusionGuide"]

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pyro.distributions.torch_transform import TransformModule
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from torch import Tensor, nn

from pyro_relax.infer.guides.base import RelaxedGuideMixin, check_init_scale, check_model
from pyro_relax.infer.guides.flow import LocScaleTransform
from pyro_relax.infer.guides.whitening import make_whitening
from pyro_relax.nn.score import ScoreMLP
from pyro_relax.ops.gaussian import euler_maruyama_step, gaussian_transition_log_prob

_REFERENCES = ("pis", "dds")


class AutoDiffusionGuide(RelaxedGuideMixin, AutoContinuous):
    r"""A diffusion-sampler autoguide (PIS / DDS) trained on its path-space ELBO.

    Arguments:
        model: a Pyro model (continuous latent sites).
        num_steps: Euler-Maruyama steps ``K``.
        reference: ``"pis"`` (Brownian motion from a point) or ``"dds"``
            (Ornstein-Uhlenbeck from ``N(0, I)``); see the module docstring.
        sigma: diffusion coefficient of the PIS reference (``> 0``).
        hidden: hidden layer sizes of the default drift network.
        drift: the drift network: ``None`` for ``ScoreMLP(latent_dim, hidden,
            zero_last=True)``, a module with ``forward(y, t)``, or a callable
            ``latent_dim -> module``.
        init_loc_fn: per-site initialization (Pyro's ``init_to_*``).
        init_scale: initial scale of the output affine layer; with the drift at
            zero the guide starts as ``N(init_loc, init_scale^2 I)``.
        init_gaussian: ``(loc, scale_tril)`` in the unconstrained space; the
            output layer is then a whitening affine map started there.
        dtype: the dtype of the guide's parameters and latents (``None``: float64).

    References:
        Zhang and Chen. Path Integral Sampler. ICLR 2022 (arXiv 2111.15141).
        Vargas, Grathwohl and Doucet. Denoising Diffusion Samplers. ICLR 2023
        (arXiv 2302.13834).

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
        >>> guide = AutoDiffusionGuide(model, num_steps=4, hidden=(8,))
        >>> z, log_q = guide.sample_unconstrained(3)
        >>> z.shape, log_q.shape
        (torch.Size([3, 1]), torch.Size([3]))
    """

    def __init__(
        self,
        model: Callable[..., Any],
        num_steps: int = 20,
        *,
        reference: str = "pis",
        sigma: float = 1.0,
        hidden: Sequence[int] = (64, 64),
        drift: nn.Module | Callable[[int], nn.Module] | None = None,
        init_loc_fn: Callable[[dict], Tensor] = init_to_median,
        init_scale: float = 0.1,
        init_gaussian: tuple[Tensor, Tensor] | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        owner = type(self).__name__
        check_model(model, owner)
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"{owner}: expected an int num_steps >= 1, got {num_steps!r}")
        if reference not in _REFERENCES:
            raise ValueError(f"{owner}: expected reference in {_REFERENCES}, got {reference!r}")
        if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma > 0:
            raise ValueError(f"{owner}: expected sigma > 0, got {sigma!r}")
        if not isinstance(hidden, Sequence) or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden
        ):
            raise ValueError(f"{owner}: expected hidden as a list of positive ints, got {hidden!r}")
        if drift is not None and not callable(drift):
            raise TypeError(
                f"{owner}: expected a drift module or callable, got {type(drift).__name__}"
            )
        self.num_steps = num_steps
        self.reference = reference
        self.sigma = float(sigma)
        self._hidden = tuple(hidden)
        self._drift_spec = drift
        self._init_scale = check_init_scale(init_scale, owner)
        super().__init__(model, init_loc_fn=init_loc_fn)
        self._init_relaxed(model, init_gaussian, dtype)

    def _build(self, init_loc: Tensor) -> None:
        d = self.latent_dim
        spec = self._drift_spec
        if spec is None:
            drift: nn.Module = ScoreMLP(d, hidden=self._hidden, embed_features=16, zero_last=True)
        elif isinstance(spec, nn.Module):
            drift = spec
        else:
            drift = spec(d)
            if not isinstance(drift, nn.Module):
                raise TypeError(
                    f"{type(self).__name__}: expected drift(latent_dim) to return an nn.Module, "
                    f"got {type(drift).__name__}"
                )
        self.drift = drift.to(device=init_loc.device, dtype=init_loc.dtype)
        loc, tril = self._initial_gaussian(init_loc)
        if tril is None:
            self.affine: TransformModule = LocScaleTransform(loc, self._init_scale)
        else:
            # the reference process is N(0, I)-scaled: whitening puts it where the posterior is
            self.affine = make_whitening(loc, tril)

    def _coefficients(self) -> tuple[float, float, float, float]:
        """``(a, v, c, s_K)`` of the reference chain (constant over the steps)."""
        k = self.num_steps
        if self.reference == "pis":
            h = 1.0 / k
            return 1.0, self.sigma**2 * h, h, self.sigma
        alpha = -math.expm1(-2.0 / k)
        return math.sqrt(1.0 - alpha), alpha, alpha, 1.0

    def _draw(self, sample_shape: torch.Size) -> tuple[Tensor, Tensor]:
        affine, drift = self.affine, self.drift
        like = affine.loc
        shape = torch.Size(sample_shape) + (self.latent_dim,)
        a, v, c, s_k = self._coefficients()
        if self.reference == "pis":
            y = like.new_zeros(shape)
        else:
            y = torch.randn(shape, device=like.device, dtype=like.dtype)
        correction = like.new_zeros(sample_shape)
        for k in range(self.num_steps):
            t = y.new_full(sample_shape, k / self.num_steps)
            y, step = euler_maruyama_step(y, a, c * drift(y, t), v, torch.randn_like(y))
            # log F_k - log R_k = |delta|^2 / (2 v) + delta . eps / sqrt(v)
            correction = correction + step.log_controlled - step.log_reference
        log_ref = gaussian_transition_log_prob(y, torch.zeros_like(y), s_k**2, normalized=True)
        u = y / s_k
        z = affine(u)
        log_q = log_ref + correction + self.latent_dim * math.log(s_k)
        log_q = log_q - affine.log_abs_det_jacobian(u, z)
        return z, log_q
