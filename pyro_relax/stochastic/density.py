r"""The intermediate (annealed) densities of the SNF blocks.

.. math::
    \log \pi_\lambda(x) = (1 - \lambda) \log p_{base}(x) + \lambda \log p_{target}(x),

with ``lambda`` in ``[0, 1]`` fixed, learnable (sigmoid-parametrized) or taken
from a shared :class:`~pyro_relax.stochastic.schedules.LearnedSchedule`.
"""

from __future__ import annotations

__all__ = [
    "AnnealedDensity",
    "LogDensity",
    "attach_log_density",
    "check_count",
    "check_log_density_output",
    "standard_normal_log_prob",
]

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

LogDensity = Callable[[Tensor], Tensor] | nn.Module | Distribution


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """``log N(x; 0, I)`` summed over the last dimension (a ready-made annealing base).

    Example:
        >>> import torch
        >>> round(float(standard_normal_log_prob(torch.zeros(2))), 4)
        -1.8379
    """
    return -0.5 * (x.square().sum(-1) + x.shape[-1] * math.log(2 * math.pi))


def check_log_density_output(
    lp: object, batch_shape: torch.Size | tuple[int, ...], name: str, what: str = "target"
) -> Tensor:
    """Return ``lp`` if it is a floating tensor of shape ``batch_shape``, else raise.

    A log density maps ``batch + event`` to ``batch``; one that sums over the
    batch (a scalar) or keeps the event dimensions would broadcast into wrong
    log weights without a word. The check reads shapes only (no synchronization).

    Arguments:
        lp: what the log density returned.
        batch_shape: the batch shape of its input.
        name: the entry point named in the message.
        what: which density (``"target"``, ``"base"``).

    Returns:
        ``lp`` unchanged.

    Raises:
        TypeError: if ``lp`` is not a floating-point tensor.
        ValueError: if its shape is not ``batch_shape``.

    Example:
        >>> import torch
        >>> check_log_density_output(torch.zeros(3), (3,), "f").shape
        torch.Size([3])
    """
    if not isinstance(lp, Tensor) or not (lp.is_floating_point() or lp.is_complex()):
        got = f"dtype {lp.dtype}" if isinstance(lp, Tensor) else type(lp).__name__
        raise TypeError(
            f"{name}: expected the {what} log density to return a floating-point tensor, got {got}"
        )
    if lp.shape != torch.Size(batch_shape):
        raise ValueError(
            f"{name}: expected the {what} log density to return the batch shape "
            f"{tuple(batch_shape)}, got {tuple(lp.shape)} (it must map batch + event to batch: "
            f"sum over the event dimensions only, never over the batch)"
        )
    return lp


def _check_lambda(value: object, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: expected lam as a float in [0, 1], got {type(value).__name__}")
    lam = float(value)
    if not 0.0 <= lam <= 1.0:  # also rejects NaN
        raise ValueError(f"{owner}: expected lam in [0, 1], got {value!r}")
    return lam

def check_count(value: object, name: str, owner: str, minimum: int) -> int:
    """Return ``value`` if it is an ``int >= minimum`` (not a bool), else raise ``ValueError``.

    Example:
        >>> check_count(3, "n_steps", "demo", 1)
        3
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: expected an int {name} >= {minimum}, got {value!r}")
    return value


def attach_log_density(owner: nn.Module, name: str, fn: object) -> Callable[[Tensor], Tensor]:
    """Return the callable log density of ``fn``; register ``fn`` on ``owner`` if it is a module.

    A module with ``log_prob`` (a :class:`~pyro_relax.targets.Target`) gives its
    ``log_prob``, another module itself (both become the submodule ``name``, so
    they follow ``.to(device)``); a torch distribution gives its ``log_prob``
    (not moved by ``.to``); a plain callable is returned as is.

    Raises:
        TypeError: ``fn`` is none of these (the message names ``owner``'s class).

    Example:
        >>> holder = nn.Module()
        >>> f = attach_log_density(holder, "target", lambda x: -x.sum(-1))
        >>> float(f(torch.ones(1, 2))[0])
        -2.0
    """
    if isinstance(fn, nn.Module):
        owner.add_module(name, fn)
        return getattr(fn, "log_prob", fn)
    if isinstance(fn, Distribution):
        return fn.log_prob
    if callable(fn):
        return fn  # type: ignore[return-value]
    raise TypeError(
        f"{type(owner).__name__}: expected a callable {name} log density, got {type(fn).__name__}"
    )


class AnnealedDensity(nn.Module):
    r"""``log pi_lambda(x) = (1 - lambda) log p_base(x) + lambda log p_target(x)``.

    Log densities may be modules with ``log_prob`` (a
    :class:`~pyro_relax.targets.Target`), other modules (called), torch
    distributions (``log_prob``, not moved by ``.to``) or plain callables; each
    maps ``batch + event`` to ``batch``. Modules are registered as submodules,
    so they follow ``.to(device)`` and ``.double()``.

    Arguments:
        target: the target log density (unnormalized is fine).
        base: the base log density; needed unless ``lam`` is 1.
        lam: a float in ``[0, 1]`` or a module returning a 0-dim tensor
            (a :class:`ScheduleEntry`).
        learn_lam: learn a float ``lam`` (sigmoid-parametrized; start in ``(0, 1)``).
        event_dim: the event dimensions of ``x``; each density must return the
            batch shape ``x.shape[:-event_dim]`` (a ``ValueError`` otherwise).

    Example:
        >>> import torch
        >>> d = AnnealedDensity(lambda x: -x.sum(-1), standard_normal_log_prob, lam=0.5)
        >>> d(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        target: LogDensity,
        base: LogDensity | None = None,
        lam: float | nn.Module = 1.0,
        learn_lam: bool = False,
        event_dim: int = 1,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.event_dim = check_count(event_dim, "event_dim", owner, 0)
        self._target_fn = attach_log_density(self, "target", target)
        self._base_fn = None if base is None else attach_log_density(self, "base", base)
        self.learn_lam = bool(learn_lam)
        if isinstance(lam, nn.Module):
            self.lam_module = lam
            fixed = None
        else:
            fixed = _check_lambda(lam, owner)
            if learn_lam:
                if not 0.0 < fixed < 1.0:
                    raise ValueError(f"{owner}: a learnable lam must start in (0, 1), got {fixed}")
                self.lam_logit = nn.Parameter(torch.tensor(math.log(fixed / (1.0 - fixed))))
            else:
                self.register_buffer("lam_value", torch.tensor(fixed))
        # With a fixed lambda of 1 the base is never evaluated.
        self._target_only = fixed == 1.0 and not learn_lam
        if base is None and not self._target_only:
            raise ValueError(
                f"{owner}: lam other than a fixed 1.0 needs a base log density, got none"
            )

    def lam(self) -> Tensor:
        """The current lambda as a 0-dim tensor."""
        if "lam_module" in self._modules:
            return self.lam_module()
        if self.learn_lam:
            return torch.sigmoid(self.lam_logit)
        return self.lam_value

    def forward(self, x: Tensor) -> Tensor:
        """``log pi_lambda(x)`` of shape ``batch`` (no value checks: used inside steps).

        The shapes of the densities' outputs are checked (free: no synchronization).
        """
        batch = x.shape[: x.dim() - self.event_dim]
        owner = type(self).__name__
        lp_target = check_log_density_output(self._target_fn(x), batch, owner)
        if self._base_fn is None or self._target_only:
            return lp_target
        lam = self.lam().to(dtype=lp_target.dtype)
        lp_base = check_log_density_output(self._base_fn(x), batch, owner, "base")
        return lam * lp_target + (1.0 - lam) * lp_base

    def extra_repr(self) -> str:
        """The module's settings, for ``repr``."""
        kind = (
            "module" if "lam_module" in self._modules else "learned" if self.learn_lam else "fixed"
        )
        return f"lam={kind}, base={'none' if self._base_fn is None else 'given'}"

