r"""``AutoHierarchicalGuide``: reads the model's plates; its locals are conditioned on its globals.

The plate structure of the model (:mod:`pyro_relax.infer.guides.hierarchy`)
splits the unconstrained latent into globals ``g`` (outside every plate) and
local blocks ``u_i`` (one ``m``-vector per plate member ``i``). The guide is

.. math::
    q(z) = q_\phi(g) \prod_i \mathcal N\big(u_i;\ \mu_i(g),\ \Lambda_i(g)^{-1}\big),

a flow (IAF with a full-rank affine end) over the few globals, and for each
plate member a Gaussian whose precision and mean are those of a *product of
two Gaussian experts* whose parameters are linear in the global draw
``h = g - g_0``:

.. math::
    \Lambda_i = \mathrm{diag}(e^{p_i + P_i h}) + e^{r_i + R_i h} L_i L_i^\top,

    \Lambda_i \mu_i = e^{p_i + P_i h} \odot (a_i + A_i h)
        + e^{r_i + R_i h} L_i L_i^\top (b_i + B_i h)

The first expert plays the prior of the local given the globals (for
``theta_i ~ N(mu, tau)`` with ``g = (mu, log tau)``: precision
``exp(-2 log tau)``, mean ``mu``, both of this linear form), the second the
likelihood of the group's data (precision ``n_i / sigma^2``, mean the group's
data mean). Their product is the exact conditional posterior of a centered
Gaussian hierarchy, so the funnel between a group scale and its members is
represented exactly, whatever the global draw; what is left to learn is the
low-dimensional marginal of the globals, which the flow handles. Sampling is
globals first, then locals given globals (a triangular map), so ``log q`` is
exact.

**Start.** The model itself sets the first expert: it runs at the start
point and with each global coordinate moved, and the slopes of its locals'
prior ``loc`` and log precision are read off (exact for location-scale priors
whose loc and log scale are linear in the unconstrained globals). The second
expert starts at a Newton step: each member's ``m x m`` Hessian block (one
Hessian-vector product per local coordinate) less the prior precision. For a
Gaussian likelihood the guide thus starts with the exact conditionals.

Cost: ``O(G (m k + m^2))`` parameters and ``O(G m^3)`` work per draw for ``G``
plate members of local size ``m`` and ``k = min(d_g, max_features)``
features of the globals (a learned linear projection when ``d_g`` is larger),
linear in the latent size; no ``d x d`` factor. The globals' flow costs
``O(d_g^2 + d_g * hidden)``: the globals are assumed few.

Limits: local blocks are independent given the globals (crossed effects in two
plates are not coupled); a latent in nested plates is one block per member of
the plate product, conditioned on the globals only (not on the enclosing
plate's locals); subsampled plates are not supported (as in ``AutoContinuous``).

Related: Pyro's ``AutoStructured`` (needs a hand-written dependency spec) and
automatic structured VI (Ambrogioni et al., AISTATS 2021), whose convex
prior/posterior updates this precision-weighted form generalizes.
"""

from __future__ import annotations

__all__ = ["AutoHierarchicalGuide"]

import math
from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from torch import Tensor, nn

from pyro_relax.core.checks import check_int, check_positive
from pyro_relax.infer.guides.base import (
    RelaxedGuideMixin,
    check_init_scale,
    check_model,
)
from pyro_relax.infer.guides.conditional import LOG_PREC_MAX, ConditionalGaussianBlock
from pyro_relax.infer.guides.flow import build_flow_layers, make_flow
from pyro_relax.infer.guides.hierarchy import (
    LatentStructure,
    conditional_prior,
    latent_structure,
)
from pyro_relax.infer.guides.whitening import CholeskyAffineTransform, start_as_identity

_MIN_DF = 3.0  # the Student-t base's degrees of freedom stay above this
_PROBE = 0.5  # the step in a global coordinate when reading the prior's slopes


class _StudentTBase(nn.Module):
    """A standard Student-t base of ``dim`` iid coordinates; ``df > 3`` per coordinate, learnable.

    (The floor keeps the fourth moment finite: no draw far enough out to
    overflow the model's density.)
    """

    def __init__(self, dim: int, df: float, like: Tensor) -> None:
        super().__init__()
        start = math.log(max(df - _MIN_DF, 1e-3))
        self.log_df = nn.Parameter(torch.full((dim,), start, device=like.device, dtype=like.dtype))

    def forward(self) -> dist.Distribution:
        df = _MIN_DF + self.log_df.exp()
        return dist.StudentT(df, torch.zeros_like(df), torch.ones_like(df)).to_event(1)


class AutoHierarchicalGuide(RelaxedGuideMixin, AutoContinuous):
    r"""A structured autoguide: a flow over the globals, conditional Gaussians for the locals.

    The plate structure is read from the model's trace (no spec to write):
    sites outside every plate are global, sites inside plates are local, one
    block per set of plates (see :mod:`pyro_relax.infer.guides.hierarchy`).
    Each plate member's local vector is Gaussian given the globals, with a
    mean and precision that are a product of two experts linear in the
    globals' draw (see the module docstring), which is exact for centered
    Gaussian hierarchies: the funnel of a group scale over its members is
    captured. ``log q`` is exact.

    Arguments:
        model: a Pyro model (continuous latent sites; no subsampling of local plates).
        num_layers: IAF layers of the globals' flow (0: a full-rank Gaussian).
        hidden: hidden width of the IAF layers.
        max_features: the most global coordinates the locals see directly;
            with more globals, the locals see a learned linear projection to
            ``max_features`` dims.
        init_loc_fn: per-site initialization (Pyro's ``init_to_*``).
        init_scale: initial standard deviation of every latent.
        init_gaussian: ``(loc, scale_tril)`` of a Gaussian approximation of the
            whole unconstrained latent (e.g. Pathfinder's): the globals' flow
            starts at its marginal, the locals at its means and marginal sds.
        global_df: initial degrees of freedom (learned, kept above 3) of the
            Student-t base of the globals' flow: tails heavier than a
            Gaussian's follow e.g. the exponential tail of a group scale's
            log towards 0 and keep importance weights bounded; ``None`` for a
            standard normal base.
        dtype: the dtype of the guide's parameters and latents (``None``: float64).

    References:
        Ambrogioni et al. Automatic structured variational inference. AISTATS 2021.
        Kingma et al. Improved variational inference with inverse autoregressive flow. 2016.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     tau = pyro.sample("tau", dist.HalfNormal(1.0))
        ...     with pyro.plate("J", 5):
        ...         pyro.sample("theta", dist.Normal(0.0, tau))
        >>> guide = AutoHierarchicalGuide(model, num_layers=1, hidden=8)
        >>> sorted(guide())
        ['tau', 'theta']
        >>> guide.structure.describe()
        'globals tau (1 dims); plate J: theta (5 x 1)'
        >>> z, log_q = guide.sample_unconstrained(3)
        >>> z.shape, log_q.shape
        (torch.Size([3, 6]), torch.Size([3]))
    """

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        num_layers: int = 1,
        hidden: int = 32,
        max_features: int = 16,
        init_loc_fn: Callable[[dict], Tensor] = init_to_median,
        init_scale: float = 0.1,
        init_gaussian: tuple[Tensor, Tensor] | None = None,
        global_df: float | None = 5.0,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        owner = type(self).__name__
        if global_df is not None:
            global_df = check_positive(global_df, "global_df", owner)
            if global_df <= _MIN_DF:
                raise ValueError(f"{owner}: expected global_df > {_MIN_DF:g}, got {global_df!r}")
        self._global_df = global_df
        check_model(model, owner)
        self._num_layers = check_int(num_layers, "num_layers", owner, 0)
        self._hidden = check_int(hidden, "hidden", owner, 1)
        self._max_features = check_int(max_features, "max_features", owner, 1)
        self._init_scale = check_init_scale(init_scale, owner)
        self._structure: LatentStructure | None = None
        super().__init__(model, init_loc_fn=init_loc_fn)
        self._init_relaxed(model, init_gaussian, dtype)

    @property
    def structure(self) -> LatentStructure:
        """The globals and local blocks read from the model (after the first call)."""
        if self._structure is None:
            raise RuntimeError(f"{type(self).__name__}.structure: run the guide once first")
        return self._structure

    def _build(self, init_loc: Tensor) -> None:
        structure = latent_structure(self.prototype_trace)
        self._structure = structure
        like = {"device": init_loc.device, "dtype": init_loc.dtype}
        loc, tril = self._initial_gaussian(init_loc)
        if tril is None:
            sd = torch.full_like(loc, self._init_scale)
        else:
            sd = tril.pow(2).sum(-1).sqrt()
        gi = structure.global_index.to(init_loc.device)
        d_g = structure.global_dim
        self.register_buffer("_order", structure.order().argsort().to(init_loc.device))
        self.register_buffer("_g0", loc[gi].clone())
        self.global_flow = None
        self.projection = None
        if d_g:
            self.global_flow = self._global_flow(loc[gi], tril, gi).to(**like)
            if d_g > self._max_features:
                w = torch.randn(self._max_features, d_g, **like) / math.sqrt(d_g)
                self.projection = nn.Parameter(w)
        k = min(d_g, self._max_features)
        self.blocks = nn.ModuleList(
            ConditionalGaussianBlock(loc[b.index.to(loc.device)], sd[b.index.to(loc.device)], k)
            for b in structure.blocks
        )
        if 0 < d_g <= self._max_features and self.blocks:
            self._start_at_prior(loc, gi)
        if self.blocks:
            self._start_at_data(loc)

    def _global_flow(self, loc: Tensor, tril: Tensor | None, gi: Tensor) -> nn.Module:
        """IAF layers (starting as the identity) under a full-rank affine end at ``loc``.

        The affine end is ``loc + L0 (shift + M u)``: with ``init_gaussian``
        ``L0`` is its globals' Cholesky factor (a whitening start); otherwise
        ``L0 = I`` and ``M`` starts at ``init_scale * I``, so the location
        moves in the model's units.
        """
        d_g = loc.numel()
        like = {"device": loc.device, "dtype": loc.dtype}
        stack: list[Any] = []
        for i in range(self._num_layers if d_g > 1 else 0):
            width = max(self._hidden, d_g)  # Pyro needs hidden widths >= the input size
            stack.append(T.affine_autoregressive(d_g, hidden_dims=[width, width]))
            if i < self._num_layers - 1:
                stack.append(T.Permute(torch.arange(d_g - 1, -1, -1, device=loc.device)))
        start_as_identity(stack)
        if tril is None:
            end = CholeskyAffineTransform(loc, torch.eye(d_g, **like))
            with torch.no_grad():
                end.log_diag.fill_(math.log(self._init_scale))
        else:
            cov = tril @ tril.transpose(-1, -2)
            end = CholeskyAffineTransform(loc, torch.linalg.cholesky(cov[gi][:, gi]))
        layers = build_flow_layers(d_g, [*stack, end], loc, self._init_scale)
        base = None if self._global_df is None else _StudentTBase(d_g, self._global_df, loc)
        return make_flow(layers, d_g, type(self).__name__, base=base)

    def _start_at_prior(self, loc: Tensor, gi: Tensor) -> None:
        """Start each block's prior expert at the model's prior of the locals given the globals.

        The model runs at the start point and at ``2 d_g`` points with one
        global coordinate moved by ``+-_PROBE`` (unconstrained; every local held
        at its start, so a local whose prior sits on another local gets no
        noise from redrawing its parent); the slopes of
        the prior's loc and log precision are finite differences (exact for
        ``Normal(mu, tau)`` in ``(mu, log tau)``). Where the prior is exactly
        linear (zero second differences) the prior expert is fixed there.
        """
        d_g = gi.numel()
        steps = torch.cat([torch.eye(d_g), -torch.eye(d_g)]).to(loc) * _PROBE
        rows = loc.expand(2 * d_g + 1, -1).clone()
        rows[1:, gi] += steps
        samples = self.unconstrained_to_samples(rows)
        args, kwargs = self.model_args
        flat_loc = torch.full_like(rows, math.nan)
        flat_prec = torch.full_like(rows, math.nan)
        for r in range(2 * d_g + 1):
            values = {name: v[r] for name, v in samples.items()}  # locals stay at the start
            try:
                prior = conditional_prior(self.raw_model, values, args, kwargs)
            except Exception:  # noqa: BLE001 - a model that cannot run conditioned: keep the start
                return
            pos = 0
            for name, shape in self.latent_shapes().items():
                size = math.prod(shape)
                if name in prior and tuple(prior[name][0].shape) == tuple(shape):
                    flat_loc[r, pos:pos + size] = prior[name][0].reshape(-1).to(loc)
                    flat_prec[r, pos:pos + size] = -2 * prior[name][1].reshape(-1).to(loc).log()
                pos += size
        for b, block in zip(self.structure.blocks, self.blocks, strict=True):
            idx = b.index.to(loc.device)
            exact = torch.ones(idx.shape, dtype=torch.bool, device=loc.device)
            slopes = []
            for f in (flat_loc[:, idx], flat_prec[:, idx]):  # (2 d_g + 1, G, m)
                up, down = f[1 : d_g + 1], f[d_g + 1 :]
                slopes.append(((up - down) / (2 * _PROBE)).movedim(0, -1))
                curvature = (up + down - 2 * f[0]).abs()
                tol = math.sqrt(torch.finfo(loc.dtype).eps) * (1 + f[0].abs())
                exact &= (curvature <= tol).all(0)
            block.set_prior_expert(flat_loc[0, idx], slopes[0], flat_prec[0, idx], slopes[1], exact)

    def _start_at_data(self, loc: Tensor) -> None:
        """Start each block's data expert at a Newton step of the model's density at ``loc``.

        The locals' curvature (each member's ``m x m`` Hessian block, by one
        Hessian-vector product per local coordinate: members are independent
        given the globals) less the prior expert's precision is the data
        expert's precision; its mean makes the product of the two experts the
        Newton point. Exact for a Gaussian likelihood.
        """
        z0 = loc.detach().clone().requires_grad_(True)
        cols = []
        try:
            with torch.enable_grad():  # the first call may come from a no_grad draw
                (grad,) = torch.autograd.grad(self.log_joint(z0), z0, create_graph=True)
                for j in range(max(b.group_dim for b in self.structure.blocks)):
                    v = torch.zeros_like(loc)
                    for b in self.structure.blocks:
                        if j < b.group_dim:
                            v[b.index[:, j].to(loc.device)] = 1.0
                    (hv,) = torch.autograd.grad(grad, z0, v, retain_graph=True)
                    cols.append(-hv.detach())
        except Exception:  # noqa: BLE001 - no second derivative: keep the start
            return
        grad = grad.detach()
        for b, block in zip(self.structure.blocks, self.blocks, strict=True):
            idx = b.index.to(loc.device)
            curv = torch.stack([c[idx] for c in cols[: b.group_dim]], -1)  # (G, m, m)
            curv = 0.5 * (curv + curv.transpose(-1, -2))
            prior_prec = block.p.detach().clamp(-LOG_PREC_MAX, LOG_PREC_MAX).exp()
            data_prec = curv - torch.diag_embed(prior_prec)
            # members with little or no data: a small diagonal data expert instead
            floor = data_prec.diagonal(dim1=-2, dim2=-1).maximum(1e-3 * prior_prec)
            bad = torch.linalg.cholesky_ex(data_prec)[1] != 0
            data_prec = torch.where(bad[:, None, None], torch.diag_embed(floor), data_prec)
            target = (curv @ loc[idx].unsqueeze(-1)).squeeze(-1) + grad[idx]
            target = target - prior_prec * block.a.detach()
            mean = torch.linalg.solve_ex(data_prec, target.unsqueeze(-1))[0].squeeze(-1)
            block.set_data_expert(mean, data_prec)

    def _features(self, g: Tensor) -> Tensor:
        """What the locals see of the globals' draw: ``g - g0``, projected when ``d_g`` is large."""
        h = g - self._g0
        return h if self.projection is None else h @ self.projection.transpose(-1, -2)

    def local_conditionals(self, g: Tensor) -> list[tuple[Tensor, Tensor]]:
        """The Gaussian ``q(u_i | g)`` of each local block, for unconstrained globals ``g``.

        Arguments:
            g: global coordinates, shape ``batch + (d_g,)`` (in the order of
                ``structure.global_index``).

        Returns:
            Per block (in ``structure.blocks`` order), ``(mean, precision)`` of
            shapes ``batch + (G, m)`` and ``batch + (G, m, m)``.
        """
        owner = f"{type(self).__name__}.local_conditionals"
        d_g = self.structure.global_dim
        if not isinstance(g, Tensor) or g.dim() < 1 or g.shape[-1] != d_g:
            got = tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__
            raise ValueError(f"{owner}: expected globals of shape (..., {d_g}), got {got}")
        h = self._features(g.to(self._g0))
        out = []
        for block in self.blocks:
            prec, rhs = block.precision_and_mean(h)
            mean = torch.linalg.solve(prec, rhs.unsqueeze(-1)).squeeze(-1)
            out.append((mean, prec))
        return out

    def _draw(self, sample_shape: torch.Size) -> tuple[Tensor, Tensor]:
        like = {"device": self._g0.device, "dtype": self._g0.dtype}
        if self.global_flow is not None:
            g, log_q = self.global_flow().rsample_and_log_q(sample_shape)
            h = self._features(g)
        else:
            g = torch.zeros(sample_shape + (0,), **like)
            log_q = torch.zeros(sample_shape, **like)
            h = g
        parts = [g]
        for block in self.blocks:
            eps = torch.randn(sample_shape + block.a.shape, **like)
            u, lq = block(h, eps)
            parts.append(u.flatten(-2))
            log_q = log_q + lq
        return torch.cat(parts, -1)[..., self._order], log_q
