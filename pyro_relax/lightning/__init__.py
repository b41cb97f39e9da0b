"""PyTorch Lightning modules for training on several processes or GPUs (optional extra).

Install with ``pip install pyro-relax[distributed]`` (it needs ``lightning``).
The core package never imports this subpackage.

- :class:`DensityModule`: density fitting of any :class:`~pyro_relax.distributions.Flow`.
- :class:`SVIModule`: SVI with any guide on a model with a subsampled data plate
  (:func:`fit_svi_distributed`; :func:`fit_guide_distributed` for ``pyro-relax fit --devices``).
- :class:`SNFModule`: stochastic normalizing flows against a target.
- :func:`make_trainer`, :class:`ShardedData`: a Trainer and data sharding that
  give the same global batches for any number of workers (``devices=N``,
  ``strategy="ddp"``), with exact resumption from epoch-end checkpoints.
"""

try:
    import lightning  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pyro_relax.lightning needs the 'lightning' package: pip install pyro-relax[distributed]"
    ) from err

from pyro_relax.lightning._trainer import (
    ACCELERATORS,
    STRATEGIES,
    ShardedData,
    check_devices,
    check_strategy,
    make_trainer,
)
from pyro_relax.lightning.density import DensityModule
from pyro_relax.lightning.snf import SNFModule, StepData
from pyro_relax.lightning.svi import (
    GUIDE_NAMES,
    IndexedDataset,
    SVIModule,
    fit_guide_distributed,
    fit_svi_distributed,
)

__all__ = [
    "ACCELERATORS",
    "GUIDE_NAMES",
    "STRATEGIES",
    "DensityModule",
    "IndexedDataset",
    "SNFModule",
    "SVIModule",
    "ShardedData",
    "StepData",
    "check_devices",
    "check_strategy",
    "fit_guide_distributed",
    "fit_svi_distributed",
    "make_trainer",
]
