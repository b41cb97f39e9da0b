"""Pure MCMC math shared by the SNF blocks, the MCMC kernels and the diffusion sampler guide.

Functions of tensors only (no module state), in the style of blackjax: each
move or update takes a state and returns the new state with a small
``NamedTuple`` of information (acceptance, transition densities). Tensors
are made on the device and in the dtype of the inputs, and nothing
synchronizes with the host inside a step.

* :mod:`~pyro_relax.ops.gaussian`: Gaussian transitions with a diagonal or
  dense inverse mass, kinetic energy, the Euler-Maruyama step.
* :mod:`~pyro_relax.ops.langevin`: the Langevin move and its forward and
  backward transition densities, the MALA ratio.
* :mod:`~pyro_relax.ops.integrators`: the leapfrog integrator, the Hamiltonian,
  the partial momentum refresh.
* :mod:`~pyro_relax.ops.metropolis`: Metropolis-Hastings log ratios and the
  accept step (a NaN is a rejection).
* :mod:`~pyro_relax.ops.adaptation`: dual averaging of the step size and the
  initial step-size search.
"""

from pyro_relax.ops.adaptation import (
    DualAveragingState,
    dual_averaging_init,
    dual_averaging_update,
    find_reasonable_step_size,
)
from pyro_relax.ops.gaussian import (
    DenseInverseMass,
    EulerMaruyamaInfo,
    apply_inverse_mass,
    euler_maruyama_step,
    gaussian_transition_log_prob,
    kinetic_energy,
    scale_noise,
)
from pyro_relax.ops.integrators import (
    IntegratorState,
    hamiltonian,
    leapfrog,
    partial_momentum_refresh,
)
from pyro_relax.ops.langevin import (
    LangevinInfo,
    LangevinState,
    langevin_log_transition,
    langevin_proposal,
    langevin_step,
    mala_log_accept_ratio,
)
from pyro_relax.ops.metropolis import (
    MetropolisInfo,
    acceptance_probability,
    imh_log_accept_ratio,
    metropolis_accept,
    metropolis_log_ratio,
    select,
)

__all__ = [
    "DenseInverseMass",
    "DualAveragingState",
    "EulerMaruyamaInfo",
    "IntegratorState",
    "LangevinInfo",
    "LangevinState",
    "MetropolisInfo",
    "acceptance_probability",
    "apply_inverse_mass",
    "dual_averaging_init",
    "dual_averaging_update",
    "euler_maruyama_step",
    "find_reasonable_step_size",
    "gaussian_transition_log_prob",
    "hamiltonian",
    "imh_log_accept_ratio",
    "kinetic_energy",
    "langevin_log_transition",
    "langevin_proposal",
    "langevin_step",
    "leapfrog",
    "mala_log_accept_ratio",
    "metropolis_accept",
    "metropolis_log_ratio",
    "partial_momentum_refresh",
    "scale_noise",
    "select",
]
