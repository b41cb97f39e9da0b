"""Maximum-likelihood training and evaluation of flows on data."""

from __future__ import annotations

__all__ = ["count_parameters", "evaluate_nll", "fit_density"]

import math

import torch
from torch import Tensor, nn

from pyro_relax._progress import progress_bar
from pyro_relax.core.checks import check_int
from pyro_relax.core.switch import validation
from pyro_relax.distributions.flow import Flow


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def fit_density(
    flow: Flow,
    data: Tensor,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Fit ``flow`` to ``data`` by maximizing ``log_prob`` (a bound for relaxed stacks) with Adam.

    The input is checked once; inside the loop validation is off (no host
    synchronization per step). Learning rate decays by cosine annealing.

    Arguments:
        flow: the model.
        data: tensor of shape ``(n,) + event_shape`` on the flow's device.
        steps: optimizer steps.
        batch_size: minibatch size (sampled with replacement).
        lr: initial Adam learning rate.
        seed: torch seed for minibatches and layer noise.
        progress: show a tqdm progress bar.

    Returns:
        The loss (mean negative log-likelihood bound, nats) of each step.

    Example:
        >>> import torch
        >>> from pyro_relax.transforms.stacks import coupling_stack
        >>> flow = Flow((2,), coupling_stack(2, num_layers=2, hidden=8))
        >>> losses = fit_density(flow, torch.randn(64, 2), steps=3)
        >>> len(losses)
        3
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"fit_density: expected a pyro_relax Flow, got {type(flow).__name__}")
    check_int(steps, "steps", "fit_density", 1)
    check_int(batch_size, "batch_size", "fit_density", 1)
    flow.check_data(data)  # one validation of the whole data set
    torch.manual_seed(seed)
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses: list[float] = []
    n = data.shape[0]
    with validation(False):
        for _ in progress_bar(range(steps), disable=not progress, desc="fit"):
            idx = torch.randint(0, n, (batch_size,), device=data.device)
            loss = -flow.log_prob(data[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
    out = torch.stack(losses).tolist()
    if not all(math.isfinite(v) for v in out):
        raise FloatingPointError("fit_density: the loss became NaN or inf; lower the learning rate")
    return out


@torch.no_grad()
def evaluate_nll(
    flow: Flow, data: Tensor, num_particles: int = 100, batch_size: int = 1024
) -> float:
    """Mean negative log-likelihood in nats (exact stacks), else its importance-weighted bound.

    For a stack with bound layers the estimate uses ``num_particles``
    importance samples per point (an upper bound on the NLL).

    Example:
        >>> import torch
        >>> from pyro_relax.transforms.stacks import coupling_stack
        >>> flow = Flow((2,), coupling_stack(2, num_layers=1, hidden=4))
        >>> evaluate_nll(flow, torch.zeros(3, 2)) > 0
        True
    """
    dist = flow()
    total = data.new_zeros(())
    for chunk in data.split(batch_size):
        if dist.exact:
            total = total + dist.log_prob(chunk).sum()
        else:
            total = total + dist.log_prob_iw(chunk, num_particles).sum()
    return float(-total / data.shape[0])
