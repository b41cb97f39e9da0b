r"""``ConditionalGaussianBlock``: ``G`` small Gaussians whose mean and precision follow features.

The local part of :class:`~pyro_relax.infer.guides.structured.AutoHierarchicalGuide`:
one ``m``-dim Gaussian per plate member, given features ``h`` of the global
draw, as the product of a "prior" expert (diagonal) and a "data" expert
(full rank), each with parameters linear in ``h``. Sampling is
``u = mu + C^{-T} eps`` with ``C C^T = Lambda``, so ``log q(u | h)`` is exact.
"""

from __future__ import annotations

__all__ = ["LOG_PREC_MAX", "ConditionalGaussianBlock"]

import math

import torch
from torch import Tensor, nn

from pyro_relax.core.checks import check_int

LOG_PREC_MAX = 30.0
"""Log precisions are clamped to ``[-30, 30]``: far beyond any float32 posterior scale."""


class ConditionalGaussianBlock(nn.Module):
    r"""``G`` independent ``m``-dim Gaussians whose mean and precision are functions of features.

    For features ``h`` (``k``-dim) and each row ``i``:
    ``Lambda_i = diag(exp(p_i + P_i h)) + exp(r_i + R_i h) L_i L_i^T`` and
    ``Lambda_i mu_i = exp(p_i + P_i h) * (a_i + A_i h) + exp(r_i + R_i h) L_i L_i^T (b_i + B_i h)``
    (a product of two Gaussian experts, see the module docstring).
    At the start the slopes are zero and each row is ``N(loc_i, diag(scale_i^2))``.

    Arguments:
        loc: the initial means, shape ``(G, m)`` (device and dtype are kept).
        scale: the initial standard deviations, positive, broadcasting to ``loc``.
        num_features: ``k``, the size of the features ``h``.

    Example:
        >>> import torch
        >>> block = ConditionalGaussianBlock(torch.zeros(3, 2), 0.5, num_features=4)
        >>> u, log_q = block(torch.zeros(5, 4), torch.randn(5, 3, 2))
        >>> u.shape, log_q.shape
        (torch.Size([5, 3, 2]), torch.Size([5]))
    """

    def __init__(self, loc: Tensor, scale: float | Tensor, num_features: int) -> None:
        super().__init__()
        if not isinstance(loc, Tensor) or loc.dim() != 2:
            got = tuple(loc.shape) if isinstance(loc, Tensor) else type(loc).__name__
            raise ValueError(f"ConditionalGaussianBlock: expected a loc of shape (G, m), got {got}")
        k = check_int(num_features, "num_features", "ConditionalGaussianBlock", 0)
        like = {"device": loc.device, "dtype": loc.dtype}
        scale_t = torch.as_tensor(scale, **like)
        if not bool(torch.isfinite(scale_t).all() & (scale_t > 0).all()):
            raise ValueError(
                f"ConditionalGaussianBlock: expected a positive finite scale, got {scale!r}"
            )
        g, m = loc.shape
        half_prec = (0.5 / scale_t.expand(g, m) ** 2).log()
        self.a = nn.Parameter(loc.detach().clone())
        self.b = nn.Parameter(loc.detach().clone())
        self.p = nn.Parameter(half_prec.clone())
        self.r = nn.Parameter(torch.zeros(g, **like))
        # L = I + strictly lower part, with a log-parametrized diagonal scaling the expert
        self.log_l = nn.Parameter(half_prec.clone())
        self.l_off = nn.Parameter(torch.zeros(g, m, m, **like))
        self.A = nn.Parameter(torch.zeros(g, m, k, **like))
        self.B = nn.Parameter(torch.zeros(g, m, k, **like))
        self.P = nn.Parameter(torch.zeros(g, m, k, **like))
        self.R = nn.Parameter(torch.zeros(g, k, **like))
        # entries whose prior expert is the model's exact prior: not trained
        self.register_buffer("prior_fixed", torch.zeros(g, m, dtype=torch.bool, device=loc.device))

    @torch.no_grad()
    def set_prior_expert(
        self, loc: Tensor, loc_slope: Tensor, log_prec: Tensor, log_prec_slope: Tensor,
        exact: Tensor | None = None,
    ) -> None:
        """Start the first expert at a known prior: mean ``loc + loc_slope h``, log precision alike.

        Shapes ``(G, m)``, ``(G, m, k)``, ``(G, m)``, ``(G, m, k)``; rows with a
        non-finite entry keep their start. The second expert then carries the
        initial scale alone. Entries marked ``exact`` (a ``(G, m)`` bool: the
        prior *is* this linear form) are fixed: no gradient reaches them, so
        optimizer noise cannot move them (where the conditional is narrow, in a
        funnel's neck, a slope off by 1% puts the mean many sds away).
        """
        ok = (torch.isfinite(loc) & torch.isfinite(log_prec)
              & torch.isfinite(loc_slope).all(-1) & torch.isfinite(log_prec_slope).all(-1))
        if (tuple(loc.shape), tuple(loc_slope.shape)) != (self.a.shape, self.A.shape):
            raise ValueError(
                f"set_prior_expert: expected shapes {tuple(self.a.shape)} and "
                f"{tuple(self.A.shape)}, got {tuple(loc.shape)} and {tuple(loc_slope.shape)}"
            )
        cap = LOG_PREC_MAX / 3
        self.a.copy_(torch.where(ok, loc, self.a))
        self.A.copy_(torch.where(ok.unsqueeze(-1), loc_slope.clamp(-cap, cap), self.A))
        self.p.copy_(torch.where(ok, log_prec.clamp(-cap, cap), self.p))
        self.P.copy_(torch.where(ok.unsqueeze(-1), log_prec_slope.clamp(-cap, cap), self.P))
        self.log_l.copy_(torch.where(ok, self.log_l + math.log(2.0), self.log_l))
        if exact is not None:
            self.prior_fixed.copy_(ok & exact.to(ok.device))

    @torch.no_grad()
    def set_data_expert(self, loc: Tensor, precision: Tensor) -> None:
        """Start the second expert at ``N(loc, precision^-1)`` (shapes ``(G, m)``, ``(G, m, m)``).

        Rows whose precision is not positive definite or not finite keep their start.
        """
        g, m = self.b.shape
        if tuple(loc.shape) != (g, m) or tuple(precision.shape) != (g, m, m):
            raise ValueError(
                f"set_data_expert: expected shapes {(g, m)} and {(g, m, m)}, "
                f"got {tuple(loc.shape)} and {tuple(precision.shape)}"
            )
        chol, info = torch.linalg.cholesky_ex(torch.nan_to_num(precision, nan=-1.0))
        diag = chol.diagonal(dim1=-2, dim2=-1)
        ok = (info == 0) & torch.isfinite(loc).all(-1) & (diag > 0).all(-1)
        ok = ok & (diag.log().abs() < LOG_PREC_MAX / 6).all(-1)
        safe = torch.where(ok[:, None], diag, torch.ones_like(diag))
        self.b.copy_(torch.where(ok[:, None], loc, self.b))
        self.log_l.copy_(torch.where(ok[:, None], 2 * safe.log(), self.log_l))
        self.l_off.copy_(torch.where(ok[:, None, None], chol / safe.unsqueeze(-2), self.l_off))
        self.r.masked_fill_(ok, 0.0)

    def extra_repr(self) -> str:
        """``groups=G, dim=m, features=k``."""
        g, m, k = self.A.shape
        return f"groups={g}, dim={m}, features={k}"

    def precision_and_mean(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(Lambda, mu)`` of shapes ``batch + (G, m, m)`` and ``batch + (G, m)`` for ``h``."""
        h = h.unsqueeze(-2)  # batch + (1, k)
        lin = lambda c, C: c + (C * h.unsqueeze(-2)).sum(-1)  # noqa: E731 - batch + (G, m)
        fixed, fixed_k = self.prior_fixed, self.prior_fixed.unsqueeze(-1)
        keep = lambda f, x: torch.where(f, x.detach(), x)  # noqa: E731 - fixed entries: no grad
        mu1 = lin(keep(fixed, self.a), keep(fixed_k, self.A))
        mu2 = lin(self.b, self.B)
        log_pi1 = lin(keep(fixed, self.p), keep(fixed_k, self.P))
        pi1 = log_pi1.clamp(-LOG_PREC_MAX, LOG_PREC_MAX).exp()
        s2 = (self.r + (self.R * h).sum(-1)).clamp(-LOG_PREC_MAX, LOG_PREC_MAX).exp()
        m = self.a.shape[-1]
        eye = torch.eye(m, device=self.a.device, dtype=self.a.dtype)
        chol = (self.l_off.tril(-1) + eye) * (0.5 * self.log_l).exp().unsqueeze(-2)
        gram = chol @ chol.transpose(-1, -2)  # (G, m, m)
        lam2 = s2[..., None, None] * gram
        prec = torch.diag_embed(pi1) + lam2
        rhs = pi1 * mu1 + (lam2 @ mu2.unsqueeze(-1)).squeeze(-1)
        return prec, rhs

    def forward(self, h: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Map standard normal ``eps`` (``batch + (G, m)``) to ``u`` given features ``h``.

        Returns:
            ``(u, log_q)``: ``u`` of shape ``batch + (G, m)`` and the exact
            ``log q(u | h)`` summed over the rows, shape ``batch``.
        """
        prec, rhs = self.precision_and_mean(h)
        m = eps.shape[-1]
        if m == 1:
            root = prec[..., 0].sqrt()  # batch + (G, 1)
            u = rhs / prec[..., 0] + eps / root
            log_det = root.log().sum((-1, -2))
        else:
            chol = torch.linalg.cholesky(prec)
            mean = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
            noise = torch.linalg.solve_triangular(
                chol.transpose(-1, -2), eps.unsqueeze(-1), upper=True
            ).squeeze(-1)
            u = mean + noise
            log_det = chol.diagonal(dim1=-2, dim2=-1).log().sum((-1, -2))
        n = eps.shape[-2] * m
        log_q = log_det - 0.5 * eps.pow(2).sum((-1, -2)) - 0.5 * n * math.log(2 * math.pi)
        return u, log_q
