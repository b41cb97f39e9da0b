# %% [markdown]
# # A dequantized flow on scikit-learn's digits
#
# The 8x8 digits hold integer pixels 0..16: a discrete distribution. A continuous flow
# models them through *dequantization*, a generative surjection (see
# [the math](../math.md)): uniform dequantization adds `u ~ U[0, 1)` to each pixel
# and divides by the 17 levels, with the contribution `V = -D log 17`; variational
# dequantization learns the noise `q(u | x)`, and its contribution `-log q(u | x)` gives a
# lower bound that an importance-weighted estimate (`num_particles > 1`) tightens.
# The score is bits per dimension (lower is better).
#
# Run it with `python docs/tutorials/digits.py --quick`.

# %%
import argparse
import math
from pathlib import Path

import pyro.distributions.transforms as T
import torch
from matplotlib.figure import Figure

from pyro_relax import datasets
from pyro_relax.distributions import Flow
from pyro_relax.infer import count_parameters, evaluate_nll, fit_density
from pyro_relax.surjections import UniformDequantization, VariationalDequantization
from pyro_relax.transforms import ActNorm, coupling_stack

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--quick", action="store_true", help="a small run (seconds)")
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
args, _ = parser.parse_known_args()
args.out.mkdir(parents=True, exist_ok=True)
steps, layers = (150, 4) if args.quick else (2000, 6)
train, test = datasets.digits(seed=0)
levels = 17

# %% [markdown]
# The stack, data side last: affine couplings, an `ActNorm`, a sigmoid into `(0, 1)`,
# then the dequantization layer, whose decode maps `(0, 1)` back to integer pixels.

# %%
def make_flow(variational: bool) -> Flow:
    deq = (VariationalDequantization(64, levels, hidden=(64,)) if variational
           else UniformDequantization(levels))
    stack = coupling_stack(64, layers, 64, kind="affine")
    return Flow((64,), stack + [ActNorm(64), T.SigmoidTransform(), deq])


per_dim = 64 * math.log(2)  # nats per image -> bits per pixel
flows = {}
for name, variational in (("uniform", False), ("variational", True)):
    torch.manual_seed(0)
    flow = make_flow(variational)
    fit_density(flow, train, steps=steps, batch_size=128, lr=2e-3, seed=0, progress=False)
    torch.manual_seed(1)
    bound = evaluate_nll(flow, test, num_particles=1) / per_dim
    iw = evaluate_nll(flow, test, num_particles=8) / per_dim
    flows[name] = flow
    print(f"{name:>11} dequantization: {count_parameters(flow)} parameters, test "
          f"{bound:.3f} bits/dim (bound), {iw:.3f} bits/dim (importance-weighted, K=8)")

# %% [markdown]
# Samples of each flow (the decode of the dequantization layer rounds to pixels).
#
# ![digit samples](figures/digits_samples.png)

# %%
fig = Figure(figsize=(8, 2.4), layout="constrained")
axes = fig.subplots(2, 8)
for row, (name, flow) in zip(axes, flows.items(), strict=True):
    with torch.no_grad():
        images = flow().sample((8,)).reshape(8, 8, 8)
    for ax, image in zip(row, images, strict=True):
        ax.imshow(image.numpy(), cmap="gray_r", vmin=0, vmax=levels - 1)
        ax.set_axis_off()
    row[0].set_title(name, loc="left", fontsize=9)
fig.savefig(args.out / "digits_samples.png", dpi=80)
