# %% [markdown]
# # A SurVAE abs flow against a plain flow
#
# Data that are symmetric under a sign flip, `p(x) = p(-x)` coordinate-wise, are hard
# for a bijective flow: it must fold its one Gaussian into four mirrored copies.
# The abs *surjection* does the folding for it: `z = |x|`, with the exact contribution
# `V = log p(sign | z) = -D log 2` for a fair sign (see [the math](../math.md)). The flow
# before it only has to model one quadrant.
#
# Run it with `python docs/tutorials/abs_flow.py --quick` (seconds) or without
# `--quick` for the full size.

# %%
import argparse
from pathlib import Path

import pyro.distributions.transforms as T
import torch
from matplotlib.figure import Figure

from pyro_relax import datasets
from pyro_relax.distributions import Flow
from pyro_relax.infer import count_parameters, evaluate_nll, fit_density
from pyro_relax.surjections import AbsSurjection
from pyro_relax.transforms import coupling_stack

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--quick", action="store_true", help="a small run (seconds)")
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
args, _ = parser.parse_known_args()
args.out.mkdir(parents=True, exist_ok=True)
steps = 300 if args.quick else 2000
torch.manual_seed(0)

# %% [markdown]
# Two stacks with the same number of parameters: four spline couplings, and the same
# four followed by a softplus (so the flow's output is positive) and the abs surjection.
# `Flow` is a `pyro.nn.PyroModule`; `flow()` is a Pyro distribution.

# %%
train = datasets.sign_symmetric(4000, seed=0)
test = datasets.sign_symmetric(2000, seed=1)
flows = {
    "plain spline flow": Flow((2,), coupling_stack(2, 4, 32)),
    "SurVAE abs flow": Flow((2,), coupling_stack(2, 4, 32) + [T.SoftplusTransform(),
                                                              AbsSurjection()]),
}
for name, flow in flows.items():
    fit_density(flow, train, steps=steps, batch_size=256, lr=3e-3, seed=0, progress=False)
    print(f"{name:>18}: {count_parameters(flow)} parameters, "
          f"test log-likelihood {-evaluate_nll(flow, test):.3f} nats")

# %% [markdown]
# The abs flow's `log_prob` is exact (every layer is exact), so both densities can be
# drawn on a grid and compared directly.
#
# ![the two densities](figures/abs_flow_densities.png)

# %%
grid = torch.linspace(-2.5, 2.5, 150)
xx, yy = torch.meshgrid(grid, grid, indexing="xy")
points = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
fig = Figure(figsize=(11, 3.6), layout="constrained")
axes = fig.subplots(1, 3)
axes[0].hist2d(test[:, 0].numpy(), test[:, 1].numpy(), bins=80, range=[[-2.5, 2.5], [-2.5, 2.5]])
axes[0].set_title("test data")
for ax, (name, flow) in zip(axes[1:], flows.items(), strict=True):
    with torch.no_grad():
        density = flow().log_prob(points).exp().reshape(xx.shape)
    ax.pcolormesh(xx.numpy(), yy.numpy(), density.numpy(), shading="auto")
    ax.set_title(name)
for ax in axes:
    ax.set_aspect("equal")
fig.savefig(args.out / "abs_flow_densities.png", dpi=80)
