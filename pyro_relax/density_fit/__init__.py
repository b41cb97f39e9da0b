"""The work of ``pyro-relax density``: data, validation split, flow choices, training, outputs.

Only :mod:`pyro_relax.cli` calls :func:`add_density_parser` and :func:`run_density`;
``run_density`` writes into the (temporary) folder the command hands it. The
training itself is :class:`pyro_relax.lightning.DensityModule` (several processes
with ``--devices N --strategy ddp``), imported only when a fit runs.

* :mod:`~pyro_relax.density_fit.data`: :func:`load_data`, :func:`split_data`;
* :mod:`~pyro_relax.density_fit.flows`: :data:`FLOWS`, :func:`build_flow`,
  :func:`save_density_model`, :func:`load_density_model`;
* :mod:`~pyro_relax.density_fit.run`: the subcommand's options and run.
"""

from pyro_relax.density_fit.data import BUILTIN, load_data, split_data
from pyro_relax.density_fit.flows import (
    FLOWS,
    FORMAT,
    build_flow,
    load_density_model,
    save_density_model,
)
from pyro_relax.density_fit.run import (
    add_density_parser,
    check_density_args,
    run_density,
    write_outputs,
)

__all__ = [
    "BUILTIN",
    "FLOWS",
    "FORMAT",
    "add_density_parser",
    "build_flow",
    "check_density_args",
    "load_data",
    "load_density_model",
    "run_density",
    "save_density_model",
    "split_data",
    "write_outputs",
]
