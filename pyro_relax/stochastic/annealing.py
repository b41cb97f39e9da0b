r"""Annealing: intermediate densities, schedules and the base class of SNF blocks (re-exports).

Every stochastic block of a stochastic normalizing flow (Wu, Koehler and Noe
2020) targets an intermediate density
``log pi_lambda = (1 - lambda) log p_base + lambda log p_target``. The pieces
live in their own modules and are gathered here:

* :mod:`pyro_relax.stochastic.density`: :class:`AnnealedDensity`, the base
  density :func:`standard_normal_log_prob`, the output-shape check;
* :mod:`pyro_relax.stochastic.schedules`: fixed and learned schedules;
* :mod:`pyro_relax.stochastic.block`: :class:`AnnealedBlock`, its returned
  :class:`BlockInfo` and :func:`trace_blocks`.
"""

from __future__ import annotations

from pyro_relax.stochastic.block import AnnealedBlock, BlockState
from pyro_relax.stochastic.density import (
    AnnealedDensity,
    LogDensity,
    attach_log_density,
    check_log_density_output,
    standard_normal_log_prob,
)
from pyro_relax.stochastic.schedules import (
    LearnedSchedule,
    ScheduleEntry,
    geometric_schedule,
    linear_schedule,
)
from pyro_relax.stochastic.trace import BlockInfo, BlockTrace, trace_blocks

__all__ = [
    "AnnealedBlock",
    "AnnealedDensity",
    "BlockInfo",
    "BlockState",
    "BlockTrace",
    "LearnedSchedule",
    "LogDensity",
    "ScheduleEntry",
    "attach_log_density",
    "check_log_density_output",
    "geometric_schedule",
    "linear_schedule",
    "standard_normal_log_prob",
    "trace_blocks",
]
