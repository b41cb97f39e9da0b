"""Stochastic normalizing flows: a flow with stochastic blocks and importance weights."""

from __future__ import annotations

__all__ = [
    "SNFDistribution",
    "StochasticNormalizingFlow",
    "ess_from_log_weights",
    "log_Z_from_log_weights",
    "self_normalized_expectation",
]

import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from pyro_relax.core import RelaxedLayer
from pyro_relax.core.switch import validation, validation_enabled
from pyro_relax.distributions.flow import Flow, FlowDistribution
from pyro_relax.stochastic.block import AnnealedBlock
from pyro_relax.stochastic.density import (
    LogDensity,
    attach_log_density,
    check_log_density_output,
)
from pyro_relax.stochastic.trace import BlockTrace, trace_blocks


def _check_log_weights(log_w: Tensor, name: str) -> None:
    if not isinstance(log_w, Tensor) or not log_w.is_floating_point():
        got = log_w.dtype if isinstance(log_w, Tensor) else type(log_w).__name__
        raise TypeError(f"{name}: expected a floating-point tensor of log weights, got {got}")
    if log_w.dim() < 1 or log_w.shape[0] < 1:
        raise ValueError(
            f"{name}: expected log weights of shape (n, ...), got {tuple(log_w.shape)}"
        )
    if log_w.device.type != "meta" and bool(torch.isnan(log_w).any() | (log_w == math.inf).any()):
        raise ValueError(f"{name}: expected log weights without NaN or +inf")


def _check_some_weight(log_w: Tensor, owner: str, why: str) -> None:
    """Raise ``ValueError`` when every log weight of a batch column is ``-inf``."""
    if log_w.device.type != "meta" and bool((log_w == -math.inf).all(0).any()):
        raise ValueError(f"{owner}: all log weights are -inf: no draw has positive weight ({why})")


def log_Z_from_log_weights(log_w: Tensor) -> tuple[Tensor, Tensor]:
    r"""``log mean exp(log w)`` over dim 0 and its standard error (delta method).

    With ``w = exp(log w)``, ``Z_hat = mean(w)`` is unbiased for ``Z``;
    ``se(log Z_hat) = sd(w) / (sqrt(n) mean(w))`` (computed stably).

    Arguments:
        log_w: log weights of shape ``(n, *batch)``, finite or ``-inf`` (zero weight).

    Returns:
        ``(log_Z, se)``, each of shape ``batch``; ``se`` is ``inf`` for one draw.

    Raises:
        TypeError: if ``log_w`` is not a floating tensor.
        ValueError: for an empty set, NaN or ``+inf`` entries, or all weights ``-inf``
            (in any batch column).

    Example:
        >>> import torch
        >>> est, se = log_Z_from_log_weights(torch.zeros(100))
        >>> float(est), float(se)
        (0.0, 0.0)
    """
    _check_log_weights(log_w, "log_Z_from_log_weights")
    _check_some_weight(log_w, "log_Z_from_log_weights",
                       "log Z would be -inf with an undefined standard error")
    n = log_w.shape[0]
    log_mean = torch.logsumexp(log_w, 0) - math.log(n)
    rel = torch.exp(log_w - log_mean)  # w / mean(w)
    se = rel.std(0, correction=1) / math.sqrt(n) if n > 1 else torch.full_like(log_mean, math.inf)
    return log_mean, se


def ess_from_log_weights(log_w: Tensor, relative: bool = False) -> Tensor:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` over dim 0 (``/ n`` if ``relative``).

    Example:
        >>> import torch
        >>> float(ess_from_log_weights(torch.zeros(10)))
        10.0
    """
    _check_log_weights(log_w, "ess_from_log_weights")
    _check_some_weight(log_w, "ess_from_log_weights", "the ESS would be 0/0")
    ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))
    return ess / log_w.shape[0] if relative else ess


def self_normalized_expectation(values: Tensor, log_w: Tensor) -> Tensor:
    """``sum_i w_i f_i / sum_i w_i`` over dim 0; ``values`` is ``(n, ...)``.

    Example:
        >>> import torch
        >>> float(self_normalized_expectation(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0])))
        0.5
    """
    _check_log_weights(log_w, "self_normalized_expectation")
    _check_some_weight(log_w, "self_normalized_expectation", "the weights cannot be normalized")
    if not isinstance(values, Tensor) or values.shape[: log_w.dim()] != log_w.shape:
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(
            f"self_normalized_expectation: expected values of shape {tuple(log_w.shape)} + (...), "
            f"got {got}"
        )
    p = torch.softmax(log_w, 0)
    return (p.reshape(p.shape + (1,) * (values.dim() - p.dim())) * values).sum(0)


class SNFDistribution(FlowDistribution):
    """A :class:`~pyro_relax.distributions.FlowDistribution` whose draws report their blocks.

    :meth:`rsample_and_log_q_with_trace` also returns the
    :class:`~pyro_relax.stochastic.block.BlockTrace` of the draw (each block's
    :class:`~pyro_relax.stochastic.block.BlockInfo`, under the display names
    ``block_labels``); :meth:`rsample_and_log_q` (hence ``rsample`` and
    ``sample``) raises, with validation on, a ``ValueError`` naming the block
    and the step that went non-finite. Made by
    :meth:`StochasticNormalizingFlow.forward`.

    Arguments:
        base: the base distribution.
        layers: the stack, base to data.
        context: an optional conditioning context.
        block_labels: display names of the stochastic blocks, in sampling order.
    """

    def __init__(
        self,
        base: Distribution,
        layers: Sequence[RelaxedLayer | torch.distributions.Transform],
        context: Tensor | None = None,
        block_labels: Sequence[str] = (),
    ) -> None:
        super().__init__(base, layers, context)
        self.block_labels = list(block_labels)

    def rsample_and_log_q_with_trace(
        self, sample_shape: torch.Size = torch.Size()
    ) -> tuple[Tensor, Tensor, BlockTrace]:
        """Draw ``(x, log q estimate)`` and the trace of the blocks' infos (no checks)."""
        with trace_blocks(self.block_labels) as trace:
            x, log_q = super().rsample_and_log_q(sample_shape)
        return x, log_q, trace

    def rsample_and_log_q(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """Draw ``x`` and its log-density estimate; with validation on, refuse non-finite steps."""
        x, log_q, trace = self.rsample_and_log_q_with_trace(sample_shape)
        if validation_enabled():
            trace.raise_if_nonfinite()
        return x, log_q


class StochasticNormalizingFlow(Flow):
    r"""A flow of bijections, surjections and stochastic blocks with importance weights.

    Samples run base -> data through ``layers``; each layer's path-weight
    contribution ``S`` (``log|det|`` for a bijection, ``Delta S`` for a stochastic
    block) adds up to

    .. math::
        \log w = \log \text{target}(x_K) - \log q_0(x_0) + \sum_k \Delta S_k,

    with ``E[exp(log w)] = Z``, the target's normalizer. From the weights:
    :meth:`log_Z_estimate` (with a standard error), :meth:`ess` and
    :meth:`expectation`. Training objectives: reverse KL ``-E[log w]``
    (:meth:`reverse_kl`) and maximum likelihood on data through the backward
    path (``-log_prob(x)``, the bound of :class:`~pyro_relax.distributions.FlowDistribution`);
    see :mod:`pyro_relax.infer.snf_training`.

    Stochastic blocks (:class:`~pyro_relax.stochastic.block.AnnealedBlock`)
    return their non-finite steps without synchronizing;
    :meth:`sample_with_log_weights` checks them once per call (with validation
    on) and raises a ``ValueError`` naming the layer and the step. The layers
    handed in are not modified: their display names (``"HMCBlock (layer 3)"``)
    are :attr:`block_labels`.

    Arguments:
        base_shape: the latent event shape (standard normal base unless ``base``).
        layers: the stack, base to data (Pyro transforms, relaxed layers, blocks).
        target: the unnormalized target log density (a Target, module,
            distribution or callable mapping ``batch + event`` to ``batch``; any
            other output shape is a ``ValueError`` when the weights are computed).
        base: optional base distribution or module returning one.

    References:
        Wu, Koehler and Noe. Stochastic Normalizing Flows. NeurIPS 2020 (arXiv 2002.06707).

    Example:
        >>> import torch, pyro.distributions.transforms as T
        >>> from pyro_relax.stochastic.density import standard_normal_log_prob
        >>> from pyro_relax.stochastic.mh import RandomWalkMH
        >>> target = lambda x: standard_normal_log_prob(x - 1.0)
        >>> snf = StochasticNormalizingFlow(
        ...     (2,), [T.AffineTransform(torch.ones(2), 1.0), RandomWalkMH(target)], target)
        >>> x, log_w = snf.sample_with_log_weights(8)
        >>> x.shape, log_w.shape
        (torch.Size([8, 2]), torch.Size([8]))
    """

    def __init__(
        self,
        base_shape: Sequence[int],
        layers: Sequence[RelaxedLayer | torch.distributions.Transform],
        target: LogDensity,
        base: Distribution | nn.Module | None = None,
    ) -> None:
        super().__init__(base_shape, layers, base)
        self._target_fn = attach_log_density(self, "target", target)

    @property
    def blocks(self) -> list[AnnealedBlock]:
        """The stochastic blocks of the stack, in sampling order."""
        return [layer for layer in self.layers if isinstance(layer, AnnealedBlock)]

    def target_log_prob(self, x: Tensor) -> Tensor:
        """The target's unnormalized log density (no input checks)."""
        with validation(False):
            return self._target_fn(x)

    @property
    def block_labels(self) -> list[str]:
        """Display names of the stochastic blocks (``"<class> (layer <i>)"``), in sampling order."""
        return [
            f"{type(layer).__name__} (layer {i})"
            for i, layer in enumerate(self.layers)
            if isinstance(layer, AnnealedBlock)
        ]

    def forward(self, context: Tensor | None = None) -> SNFDistribution:
        """The flow as an :class:`SNFDistribution`, conditioned on ``context`` if given."""
        return SNFDistribution(
            self.base_distribution(), list(self.layers), context, self.block_labels
        )

    def _check_run(self, trace: BlockTrace, log_w: Tensor) -> None:
        """One host synchronization: raise if a block or the weights went non-finite."""
        if log_w.device.type == "meta":
            return
        nan_w = (torch.isnan(log_w).any() | (log_w == math.inf).any()).to(torch.long)
        flags = [info.bad_step.reshape(()).to(log_w.device) for _, _, info in trace.entries]
        values = torch.stack([*flags, nan_w]).tolist()
        for (block, label, info), bad in zip(trace.entries, values, strict=False):
            if bad:
                block.raise_if_nonfinite(info, label)
        if values[-1]:
            raise ValueError(
                "StochasticNormalizingFlow: expected finite log weights, got NaN or +inf "
                "(check the target's log_prob at the samples and the layers' outputs)"
            )

    def sample_with_log_weights(
        self, n: int | Sequence[int], context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw samples and their log importance weights ``log w`` (differentiable).

        Arguments:
            n: the number of samples, or a sample shape.
            context: a conditioning context for conditional layers.

        Returns:
            ``(x, log_w)`` of shapes ``shape + event_shape`` and ``shape``.
        """
        shape = (n,) if isinstance(n, numbers.Integral) and not isinstance(n, bool) else n
        if (
            not isinstance(shape, Sequence)
            or not shape
            or any(
                isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape
            )
        ):
            raise ValueError(
                f"sample_with_log_weights: expected a positive int or shape, got {n!r}"
            )
        x, log_w, trace = self.sample_with_trace(shape, context)
        if validation_enabled():
            self._check_run(trace, log_w)
        return x, log_w

    def sample_with_trace(
        self, n: int | Sequence[int], context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, BlockTrace]:
        """:meth:`sample_with_log_weights` without checks, with the blocks' trace.

        The trace holds each block's :class:`~pyro_relax.stochastic.block.BlockInfo`
        (acceptance, first non-finite step) of this draw.
        """
        shape = (n,) if isinstance(n, numbers.Integral) and not isinstance(n, bool) else n
        dist = self(context)
        x, log_q, trace = dist.rsample_and_log_q_with_trace(torch.Size(int(s) for s in shape))
        lp = check_log_density_output(
            self.target_log_prob(x), log_q.shape, "StochasticNormalizingFlow"
        )
        return x, lp - log_q, trace

    def reverse_kl(self, n: int) -> Tensor:
        """``-mean(log w)``: reverse KL of the path distributions up to ``log Z`` (minimize it)."""
        return -self.sample_with_log_weights(n)[1].mean()

    def log_Z_estimate(self, n: int) -> tuple[Tensor, Tensor]:
        """``(log Z_hat, standard error)`` from ``n`` fresh weighted samples (no gradients)."""
        with torch.no_grad():
            return log_Z_from_log_weights(self.sample_with_log_weights(n)[1])

    def ess(self, n: int, relative: bool = True) -> Tensor:
        """Kish ESS of ``n`` fresh weighted samples (a fraction of ``n`` if ``relative``)."""
        with torch.no_grad():
            return ess_from_log_weights(self.sample_with_log_weights(n)[1], relative)

    def expectation(self, f: Callable[[Tensor], Tensor], n: int) -> Tensor:
        """Self-normalized importance estimate of ``E_target[f(x)]`` from ``n`` samples."""
        if not callable(f):
            raise TypeError(f"expectation: expected a callable f, got {type(f).__name__}")
        with torch.no_grad():
            x, log_w = self.sample_with_log_weights(n)
            return self_normalized_expectation(f(x), log_w)
