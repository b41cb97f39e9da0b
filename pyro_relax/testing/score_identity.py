"""Score identities: a sampler-free check of a model against draws from its posterior.

If ``z`` has density ``pi(z)`` on ``R^d`` (smooth, decaying at infinity), then
with ``g = grad log pi(z)`` and ``H`` the Hessian of ``log pi``::

    E[g] = 0        and        tr E[g g^T] + E[tr H] = E[|g|^2 + tr H] = 0.

Evaluated at reference draws of a posterior in the unconstrained space of a
Pyro model (each latent site mapped by ``biject_to(support).inv``, the density
``log p(x, T(z)) + log |det dT/dz|``), both hold within Monte Carlo error when
the model is the posterior the draws came from, and fail when it is not (a
wrong prior scale, a dropped Jacobian, a mis-indexed likelihood). The check
needs no sampler and costs a few gradient evaluations per draw.

:func:`score_identity` returns z-scores, ``mean / (sd / sqrt(n_eff))``, with
the effective sample size ``n_eff`` estimated per statistic from the chains
(Geyer's initial positive sequence), so that correlated draws are allowed for.
"""

from __future__ import annotations

__all__ = ["ScoreIdentityResult", "effective_sample_size", "score_identity", "z_threshold"]

import dataclasses
import math
from collections.abc import Callable, Mapping

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import biject_to
from torch.distributions.transforms import Transform


@dataclasses.dataclass(frozen=True)
class ScoreIdentityResult:
    """z-scores of the two score identities at a set of draws.

    Attributes:
        grad_z: ``(d,)``, z-score of the mean of each unconstrained gradient coordinate.
        trace_z: z-score of the mean of ``|g|^2 + tr H``.
        grad_n_eff: ``(d,)``, the effective sample size used for each coordinate.
        trace_n_eff: the effective sample size used for the trace statistic.
        names: ``d`` labels, ``"site[i]"`` (flat index into the unconstrained site).
        exact_trace: whether ``tr H`` is exact (else Hutchinson's estimate).
    """

    grad_z: Tensor
    trace_z: float
    grad_n_eff: Tensor
    trace_n_eff: float
    names: tuple[str, ...]
    exact_trace: bool

    @property
    def dim(self) -> int:
        """The unconstrained dimension ``d``."""
        return len(self.names)

    @property
    def max_abs_z(self) -> float:
        """The largest ``|z|`` over the ``d`` gradient coordinates and the trace statistic."""
        return max(float(self.grad_z.abs().max()), abs(self.trace_z))

    def worst(self) -> str:
        """The label of the gradient coordinate with the largest ``|z|``."""
        return self.names[int(self.grad_z.abs().argmax())]


def z_threshold(dim: int, alpha: float = 1e-3) -> float:
    """Bonferroni bound for the largest of ``dim + 1`` standard normal ``|z|``.

    Arguments:
        dim: the number of gradient coordinates (the trace statistic adds one).
        alpha: the family-wise false-alarm rate.

    Returns:
        ``q`` with ``P(max |z| > q) <= alpha`` for ``dim + 1`` standard normals.

    Example:
        >>> round(z_threshold(1, alpha=0.1), 2)
        1.96
    """
    if dim < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"z_threshold: expected dim >= 1 and 0 < alpha < 1, got {dim}, {alpha}")
    tail = torch.tensor(alpha / (2 * (dim + 1)), dtype=torch.float64)
    return float(-math.sqrt(2.0) * torch.erfinv(2 * tail - 1))


def effective_sample_size(x: Tensor) -> Tensor:
    """ESS of each column of ``(chains, draws, k)`` series (Geyer's initial positive sequence).

    Arguments:
        x: ``(chains, draws, k)``; the autocorrelations are averaged over chains.

    Returns:
        ``(k,)``, at least 1; about ``chains * draws`` for independent draws, less for
        positively autocorrelated ones (Stan's estimator without rank normalization).

    References:
        Geyer (1992), Practical Markov chain Monte Carlo; Stan Reference Manual,
        "Effective sample size".

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> ess = effective_sample_size(torch.randn(4, 1000, 3, generator=gen, dtype=torch.float64))
        >>> bool(((ess > 3000) & (ess < 5000)).all())
        True
    """
    if x.dim() != 3 or x.shape[1] < 4:
        raise ValueError(f"effective_sample_size: expected (chains, draws >= 4, k), got {x.shape}")
    m, n, _ = x.shape
    centered = x - x.mean(1, keepdim=True)
    spectrum = torch.fft.rfft(centered, n=2 * n, dim=1)
    acov = torch.fft.irfft(spectrum.abs() ** 2, n=2 * n, dim=1)[:, :n] / n  # (m, n, k)
    chain_var = acov[:, 0] * n / (n - 1)
    within = chain_var.mean(0)
    between = n * x.mean(1).var(0) if m > 1 else torch.zeros_like(within)
    var_plus = (n - 1) / n * within + between / n
    rho = 1.0 - (within - acov.mean(0)) / var_plus.clamp_min(torch.finfo(x.dtype).tiny)  # (n, k)
    rho[0] = 1.0
    pairs = rho[: n - n % 2].reshape(n // 2, 2, -1).sum(1)  # (n // 2, k)
    # initial positive sequence, made monotone
    positive = torch.cumprod((pairs > 0).to(x.dtype), dim=0)
    pairs = torch.cummin(torch.where(positive > 0, pairs, torch.zeros_like(pairs)), dim=0).values
    tau = -1.0 + 2.0 * pairs.sum(0)
    return (m * n / tau.clamp_min(1.0 / math.log10(max(m * n, 10)))).clamp(min=1.0)


class _Layout:
    """The latent sites of a model, their supports and their unconstrained shapes."""

    def __init__(self, model: Callable[[], None]) -> None:
        trace = poutine.trace(model).get_trace()
        self.sites: list[tuple[str, Transform, torch.Size, torch.Size, int]] = []
        self.nesting = 0
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            for frame in site["cond_indep_stack"]:
                if frame.dim is not None:
                    self.nesting = max(self.nesting, -frame.dim)
            if site["is_observed"]:
                continue
            transform = biject_to(site["fn"].support)
            shape = site["value"].shape
            batch_dims = len(site["fn"].batch_shape)
            self.sites.append(
                (name, transform, shape, transform.inverse_shape(shape), batch_dims)
            )
        self.names = tuple(
            f"{name}[{i}]" for name, _, _, u, _ in self.sites for i in range(u.numel())
        )

    def _padded(self, n: int, shape: torch.Size, batch_dims: int) -> tuple[int, ...]:
        """A draw of ``shape`` with a leading dimension ``n`` left of the model's plates."""
        return (n,) + (1,) * (self.nesting - batch_dims) + tuple(shape)

    def unconstrain(self, values: Mapping[str, Tensor]) -> Tensor:
        """``(n, d)`` unconstrained coordinates of ``(n, *site_shape)`` constrained values."""
        parts = []
        for name, transform, shape, _, batch_dims in self.sites:
            if name not in values:
                raise KeyError(f"score_identity: no values for latent site {name!r}")
            value = values[name]
            n = value.shape[0]
            if tuple(value.shape[1:]) != tuple(shape):
                raise ValueError(
                    f"score_identity: site {name!r}: expected shape (n, *{tuple(shape)}), "
                    f"got {tuple(value.shape)}"
                )
            padded = value.reshape(self._padded(n, shape, batch_dims))
            parts.append(transform.inv(padded).reshape(n, -1))
        return torch.cat(parts, dim=-1)

    def log_density(self, model: Callable[[], None], z: Tensor) -> Tensor:
        """``(n,)`` unconstrained log density ``log p(x, T(z)) + log |det dT/dz|``."""
        n = z.shape[0]
        values, total, start = {}, z.new_zeros(n), 0
        for name, transform, _, u, batch_dims in self.sites:
            part = z[:, start : start + u.numel()].reshape(self._padded(n, u, batch_dims))
            start += u.numel()
            x = transform(part)
            total = total + self._per_draw(transform.log_abs_det_jacobian(part, x), n)
            values[name] = x
        trace = poutine.trace(poutine.condition(model, data=values)).get_trace()
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample" and not site_is_subsample(site):
                total = total + self._per_draw(site["log_prob"], n)
        return total

    def _per_draw(self, term: Tensor, n: int) -> Tensor:
        if term.dim() > self.nesting:  # has the draws dimension
            return term.reshape(term.shape[0], -1).sum(-1).expand(n)
        return term.sum().expand(n)


def _statistics(
    layout: _Layout, model: Callable[[], None], z: Tensor, probes: int, exact: bool,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    z = z.detach().requires_grad_(True)
    log_p = layout.log_density(model, z)
    (grad,) = torch.autograd.grad(log_p.sum(), z, create_graph=True)
    trace = torch.zeros_like(log_p)
    d = z.shape[-1]
    if exact:
        for i in range(d):
            (row,) = torch.autograd.grad(grad[:, i].sum(), z, retain_graph=True)
            trace = trace + row[:, i]
    else:
        for _ in range(probes):
            v = torch.randint(0, 2, z.shape, generator=generator, device=z.device).to(z) * 2 - 1
            (hv,) = torch.autograd.grad((grad * v).sum(), z, retain_graph=True)
            trace = trace + (hv * v).sum(-1) / probes
    grad = grad.detach()
    return grad, (grad**2).sum(-1) + trace.detach()


def score_identity(
    model: Callable[[], None],
    values: Mapping[str, Tensor],
    chains: int = 1,
    exact_max_dim: int = 64,
    probes: int = 4,
    chunk_size: int = 1000,
    seed: int = 0,
) -> ScoreIdentityResult:
    """z-scores of ``E[g] = 0`` and ``tr E[g g^T] + E[tr H] = 0`` at posterior draws.

    Arguments:
        model: a Pyro model without arguments whose latent sites are all in ``values``.
        values: constrained values by site name, each ``(n, *site_shape)``, the ``n``
            draws ordered chain by chain (``chains`` equal runs of consecutive draws).
        chains: the number of chains the ``n`` draws come from (for the ESS).
        exact_max_dim: ``tr H`` is exact (``d`` Hessian-vector products) up to this
            unconstrained dimension, Hutchinson's estimate above it.
        probes: Rademacher probes per draw for Hutchinson's estimate.
        chunk_size: draws evaluated at once (memory).
        seed: seeds the Rademacher probes.

    Returns:
        A :class:`ScoreIdentityResult`; compare ``max_abs_z`` with :func:`z_threshold`.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("s", dist.LogNormal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        >>> gen = torch.Generator().manual_seed(0)
        >>> s = torch.randn(2000, generator=gen, dtype=torch.float64).exp()
        >>> result = score_identity(model, {"s": s}, chains=2)
        >>> result.names, result.max_abs_z < z_threshold(1)
        (('s[0]',), True)
        >>> wrong = score_identity(model, {"s": s ** 2}, chains=2)
        >>> wrong.max_abs_z > z_threshold(1)
        True
    """
    if not isinstance(chains, int) or chains < 1:
        raise ValueError(f"score_identity: expected a positive int chains, got {chains!r}")
    layout = _Layout(model)
    with torch.no_grad():
        z = layout.unconstrain(values)
    n, d = z.shape
    if n % chains or n // chains < 4:
        raise ValueError(f"score_identity: {n} draws do not split into {chains} chains of >= 4")
    exact = d <= exact_max_dim
    generator = torch.Generator(device=z.device).manual_seed(seed)
    grads, traces = [], []
    for start in range(0, n, chunk_size):
        g, t = _statistics(layout, model, z[start : start + chunk_size], probes, exact, generator)
        grads.append(g)
        traces.append(t)
    stats = torch.cat([torch.cat(grads), torch.cat(traces)[:, None]], dim=-1)
    if not bool(torch.isfinite(stats).all()):
        raise ValueError("score_identity: non-finite gradient or Hessian trace at some draws")
    n_eff = effective_sample_size(stats.reshape(chains, n // chains, d + 1))
    sd = stats.std(0).clamp_min(torch.finfo(stats.dtype).tiny)
    z_scores = stats.mean(0) / (sd / n_eff.sqrt())
    return ScoreIdentityResult(
        grad_z=z_scores[:d], trace_z=float(z_scores[d]), grad_n_eff=n_eff[:d],
        trace_n_eff=float(n_eff[d]), names=layout.names, exact_trace=exact,
    )
